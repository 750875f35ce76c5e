"""`heimdall predict`: the service's model over a whole store, written as CSV."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from rich.console import Console

from heimdall.atomic import atomic_open
from heimdall.data.loader import StoreDataset
from heimdall.data.store import split_files
from heimdall.errors import DatasetError, HeimdallError
from heimdall.serve.geometry import ellipse
from heimdall.serve.runtime import ModelSource

BATCH = 4096


def predict_command(args: argparse.Namespace) -> int:
    console = Console()
    source = ModelSource(file=args.model_file, store=args.store, name=args.name, version=args.version,
                         tracking_uri=args.registry_uri, alias=args.alias, threads=args.threads)
    model = source.load()
    data = Path(args.data)
    files = split_files(data, args.split) if data.is_dir() else [data]
    if not files:
        raise DatasetError(f"{data}: no {args.split} split in the folder")
    ds = StoreDataset(files)
    ids = list(ds.meta.receivers["id"])
    unknown = [i for i in ids if i not in model.receiver_ids]
    if unknown:
        raise HeimdallError(f"{files[0]}: receivers {unknown} are not in model {model.name} {model.version}")
    feats = ds.read_all("features")
    rx = np.broadcast_to(ds.meta.rx_position_m, (len(feats), *ds.meta.rx_position_m.shape))
    means, covs = [], []
    for s in range(0, len(feats), BATCH):
        m, c = model.predict(feats[s:s + BATCH], rx[s:s + BATCH], np.ones(feats[s:s + BATCH].shape[:2], np.float32))
        means.append(m)
        covs.append(c)
    mean, cov = np.concatenate(means), np.concatenate(covs)
    lat_lon = model.frame.to_geodetic(mean)
    out = Path(args.out)
    with atomic_open(out, "w") as f:
        w = csv.writer(f)
        w.writerow(["index", "lat", "lon", "east_m", "north_m", "cov_ee_m2", "cov_en_m2", "cov_nn_m2",
                    "semi_major_95_m", "semi_minor_95_m", "orientation_95_deg"])
        for i in range(len(mean)):
            e = ellipse(cov[i], 0.95)
            w.writerow([i, f"{lat_lon[i, 0]:.6f}", f"{lat_lon[i, 1]:.6f}", f"{mean[i, 0]:.1f}", f"{mean[i, 1]:.1f}",
                        f"{cov[i, 0, 0]:.6g}", f"{cov[i, 0, 1]:.6g}", f"{cov[i, 1, 1]:.6g}",
                        f"{e['semi_major_m']:.1f}", f"{e['semi_minor_m']:.1f}", f"{e['orientation_deg']:.1f}"])
    console.print(f"{len(mean)} transmissions localized with {model.name} {model.version} → {out}")
    truth = ds.read_all("tx_position_m")
    if len(truth):
        err = np.linalg.norm(mean - truth, axis=1)
        console.print(f"labelled: median error {np.median(err) / 1e3:.2f} km, p90 {np.percentile(err, 90) / 1e3:.2f} km")
    return 0
