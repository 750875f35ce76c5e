"""Radio-map accuracy against the number of labelled transmissions, on physics the map does not assume.

    python bench/bench_labels.py [--work DIR] [-n 4000] [--budgets 0,100,400,1500,all] [--scaling 1500,10000,100000]
                                 [--twin 400 [--twin-n 20000] [--epochs 40]]

The truth is the randstad-70cm network with Okumura–Hata (urban) path loss and shadowing fields of another
seed; the recordings are simulated as SigMF and imported with the built-in randstad-70cm scenario, whose map
assumes two-ray diffraction. For each label budget the map is fitted on that many labelled training
transmissions (0: self-calibrated on the unlabelled training recordings) and answers every test
transmission. Printed per budget and per number of receivers heard (1, 2, 3, 4+): median error of the
weighted centroid, the map and the oracle (the same posterior with the simulator's true maps, the transmitter's
height and power marginalised; also told the height, and without its finest shadowing component: the floor of
an estimator that cannot resolve that scale), the map's ratio to
them, 1σ/2σ ellipse coverage, 95 % region coverage and median area, the share answered. With all labels also
the labels' floor: the oracle whose fields are known exactly only at the labelled positions and kriged
elsewhere with their true covariance — what any map learned from those labels can reach. Then fit
time against the number of labels (on a simulated store of the same truth), the time to answer, and the map's
median error on that store's own test transmissions against the oracle's and the labels' floor.

Targets: 400 labels ≤ 0.75 × centroid; 1,500 ≤ 0.6 ×; all ≤ 1.3 × oracle; 0 labels ≤ 0.9 × centroid with
95 % regions holding the truth 90–97 %; ≥ 90 % answered; coverage within 4 points of nominal per class;
100,000 labels fit in ≤ 10 min on 2 cores.

--twin K: the network with K labels of the imported store (80 % for training, 20 % for validation: early
stopping and covariance calibration), trained on them alone against pretrained on a simulated twin of that
K-label store (`heimdall simulate --like`, --twin-n transmissions) and fine-tuned on them (`train --init-from`),
both answering the same test split as the map: median error, 1σ/2σ coverage, per heard class.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import yaml

from heimdall.baselines import weighted_centroid
from heimdall.cli import main as heimdall
from heimdall.features import FeatureParams
from heimdall.metrics import mahalanobis_sq
from heimdall.radiomap.answer_arrays import MapAnswers, answers_of
from heimdall.radiomap.fit import Labelled, MapOptions, Measured, fit_radio_map
from heimdall.radiomap.oracle import oracle_answers
from heimdall.scenario.builtin import load_scenario
from heimdall.scenario.schema import scenario_from_dict

MAP_SCENARIO = "randstad-70cm"
TRUTH_SHADOWING_SEED = 11
HEARD_CLASSES = ("1", "2", "3", "4+")
TARGET_RATIO_WC = {400: 0.75, 1500: 0.6}
TARGET_RATIO_WC_NO_LABELS = 0.9
TARGET_RATIO_ORACLE_ALL = 1.3
TARGET_HPD95 = (0.90, 0.97)
MIN_CLASS_TRANSMISSIONS = 50  # a heard class's coverage is judged when it has at least this many
SCALING_TEST = 400  # test transmissions of the fit-time store the scaling rows answer


@dataclass
class Split:
    """One split as the estimators read it: measurements [n, R], truth [n, 2] m, receivers heard [n]."""

    measured: Measured
    truth_m: np.ndarray
    power_dbm: np.ndarray
    heard: np.ndarray  # bool [n, R]
    lat_lon: np.ndarray


def truth_scenario_yaml(map_yaml: str) -> str:
    """The truth: the map's scenario with Okumura–Hata urban path loss, other shadowing fields, every heard kept."""
    d = yaml.safe_load(map_yaml)
    truth = copy.deepcopy(d)
    truth["name"] = f"{d['name']}-hata-truth"
    truth["environment"]["path_loss"].update(model="okumura_hata", hata_environment="urban")
    truth["environment"]["shadowing"]["seed"] = TRUTH_SHADOWING_SEED
    return yaml.safe_dump(truth, sort_keys=False)


def _quiet(*argv: str) -> None:
    """Run one heimdall command in-process; its output only when it fails."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = heimdall(list(argv))
    if code:
        raise SystemExit(f"heimdall {' '.join(argv)} failed ({code}):\n{out.getvalue()}")


def make_data(work: Path, n: int, seed: int) -> tuple[Path, Path, Path]:
    """(truth scenario file, simulated store, imported store), made once per work folder."""
    work.mkdir(parents=True, exist_ok=True)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        heimdall(["scenario", "show", MAP_SCENARIO])
    truth = work / "truth.yaml"
    truth.write_text(truth_scenario_yaml(out.getvalue()))
    sim, sigmf, imported = work / "sim", work / "sigmf", work / "imported"
    common = ["--scenario", str(truth), "-n", str(n), "--seed", str(seed), "--quiet", "--iq-samples", "0"]
    if not (sim / "test.h5").exists():
        print(f"simulating {n} transmissions of {truth.name} (store) …", flush=True)
        _quiet("simulate", *common, "--out", str(sim))
    if not (imported / "test.h5").exists():
        print("simulating the same transmissions as SigMF (ci16_le) and importing them …", flush=True)
        _quiet("simulate", *common, "--format", "sigmf", "--datatype", "ci16_le", "--out", str(sigmf))
        _quiet(
            "import",
            str(sigmf),
            "--out",
            str(imported),
            "--scenario",
            MAP_SCENARIO,
            "--quiet",
            "--overwrite",
            "--iq-samples",
            "0",
        )
    return truth, sim, imported


def read_split(path: Path, params: FeatureParams, rows: slice = slice(None)) -> Split:
    with h5py.File(path, "r") as f:
        feats, heard_by = f["features"][rows], f["mask"][rows].astype(bool)
        present = f["present"][rows].astype(bool) if "present" in f else np.ones_like(heard_by)
        truth, lat_lon = f["tx_position_m"][rows], f["tx_lat_lon"][rows]
    m = Measured.from_features(feats, present, params)
    return Split(m, truth, m.power_dbm, heard_by, lat_lon)


def matching_rows(sim_lat_lon: np.ndarray, imported_lat_lon: np.ndarray) -> np.ndarray:
    """int [n_imported]: the simulated row of each imported transmission (same position to 1e-6°)."""
    order = np.lexsort(sim_lat_lon.T[::-1])
    keys = sim_lat_lon[order]
    idx = np.searchsorted(keys[:, 0], imported_lat_lon[:, 0] - 1e-6)
    out = np.empty(len(imported_lat_lon), np.int64)
    for i, (j, ll) in enumerate(zip(idx, imported_lat_lon, strict=True)):
        near = np.where(np.abs(keys[j : j + 8] - ll).max(1) < 1e-6)[0]
        if not len(near):
            raise SystemExit(f"imported transmission {i} at {ll} has no simulated twin: simulate and import again")
        out[i] = order[j + near[0]]
    return out


def summary(
    name: str,
    ans_mean: np.ndarray,
    cov: np.ndarray | None,
    test: Split,
    wc_err: np.ndarray,
    oracle_err: np.ndarray,
    answers: MapAnswers | None = None,
) -> dict:
    """Median error, ratios, coverage and answered share for all test transmissions and per heard class."""
    err = np.linalg.norm(ans_mean - test.truth_m, axis=1)
    ok = np.isfinite(err)
    n_heard = test.heard.sum(1)
    rows = {}
    for cls in ("all",) + HEARD_CLASSES:
        sel = np.ones(len(err), bool) if cls == "all" else (n_heard >= 4 if cls == "4+" else n_heard == int(cls))
        if not sel.any():
            continue
        s = sel & ok
        row = {
            "n": int(sel.sum()),
            "answered": float(s.sum() / sel.sum()),
            "median_km": float(np.median(err[s])) / 1e3 if s.any() else float("nan"),
            "wc_ratio": float(np.median(err[s]) / np.median(wc_err[s])) if s.any() else float("nan"),
            "oracle_ratio": float(np.median(err[s]) / np.median(oracle_err[s])) if s.any() else float("nan"),
        }
        if cov is not None and s.any():
            d2 = mahalanobis_sq(ans_mean[s], cov[s], test.truth_m[s])
            row.update(cov1=float(np.mean(d2 <= 1)), cov2=float(np.mean(d2 <= 4)))
        if answers is not None and s.any():
            row.update(
                hpd95=float(answers.in_hpd95[s].mean()),
                area95_km2=float(np.median(answers.hpd95_area_km2[s])),
                nll=float(-answers.log_density_at_truth[s].mean()),
            )
        rows[cls] = row
    return {"name": name, "rows": rows}


def print_summary(label: str, s: dict) -> None:
    for cls, r in s["rows"].items():
        extra = ""
        if "cov1" in r:
            extra += f" 1σ {r['cov1']:.2f} 2σ {r['cov2']:.2f}"
        if "hpd95" in r:
            extra += f" hpd95 {r['hpd95']:.2f} area95 {r['area95_km2']:,.0f} km² nll {r['nll']:.2f}"
        print(
            f"  {label:>6} {s['name']:<8} heard {cls:<3} n {r['n']:5d} answered {r['answered']:.3f} "
            f"median {r['median_km']:6.1f} km  ×WC {r['wc_ratio']:.2f}  ×oracle {r['oracle_ratio']:.2f}{extra}"
        )


def fit_scaling(truth: Path, work: Path, sizes: list[int], spacing_m: float, seed: int) -> None:
    """Fit time against labels on a simulated store of the truth (features only), the time to answer and the
    median error against the oracle (height marginalised) on that store's own test transmissions."""
    store = work / f"scaling-{max(sizes)}"
    n_total = int(np.ceil(max(sizes) / 0.8)) + 1
    if not (store / "test.h5").exists():  # the last split written: the store is complete
        print(f"simulating {n_total} transmissions for the fit-time scaling …", flush=True)
        _quiet(
            "simulate",
            "--scenario",
            str(truth),
            "-n",
            str(n_total),
            "--seed",
            str(seed + 1),
            "--quiet",
            "--iq-samples",
            "0",
            "--splits",
            "0.8,0.1,0.1",
            "--out",
            str(store),
        )
    scenario = load_scenario(MAP_SCENARIO)
    params = FeatureParams.from_scenario(scenario)
    rows = slice(0, SCALING_TEST)
    test = read_split(store / "test.h5", params, rows)
    meas = test.measured
    with h5py.File(store / "test.h5", "r") as f:
        gain_offset_db, tx_height_m = f["oracle/gain_offset_db"][:], f["oracle/tx_height_m"][rows]
    truth_scenario = scenario_from_dict(yaml.safe_load(truth.read_text()))

    def oracle_of(known_at_m: np.ndarray | None = None) -> tuple[float, float]:
        """(median error km, mean NLL) of the oracle, its fields known everywhere or only at `known_at_m`."""
        ans = oracle_answers(
            truth_scenario, gain_offset_db, tx_height_m, meas.snr_db, meas.noise_dbm, meas.present, test.truth_m,
            spacing_m, height_known=False, known_at_m=known_at_m,
        )  # fmt: skip
        assert ans.log_density_at_truth is not None  # oracle_answers was given the truth
        km = float(np.median(np.linalg.norm(ans.mean_m - test.truth_m, axis=1))) / 1e3
        return km, float(-ans.log_density_at_truth.mean())

    oracle_median_km, oracle_nll = oracle_of()
    print(
        f"fit time and accuracy against labels (2 cores; {len(test.truth_m)} test transmissions of this store, "
        f"oracle median {oracle_median_km:.1f} km, NLL {oracle_nll:.2f}; the labels' floor: the oracle with its "
        "fields kriged from their exact values at the labelled positions):"
    )
    for n in sizes:
        lab = read_split(store / "train.h5", params, slice(0, n))
        t0 = time.perf_counter()
        m = fit_radio_map(
            scenario,
            Labelled(lab.measured.snr_db, lab.measured.noise_dbm, lab.measured.present, lab.truth_m),
            options=MapOptions(spacing_m),
        )
        fit_s = time.perf_counter() - t0
        m.localize(meas.snr_db[0], meas.noise_dbm[0], meas.present[0])
        t0 = time.perf_counter()
        for i in range(len(test.truth_m)):
            m.localize(meas.snr_db[i], meas.noise_dbm[i], meas.present[i])
        answer_ms = (time.perf_counter() - t0) / len(test.truth_m) * 1e3
        ans = answers_of(m, meas.snr_db, meas.noise_dbm, meas.present, test.truth_m)
        km = float(np.median(np.linalg.norm(ans.mean_m - test.truth_m, axis=1))) / 1e3
        assert ans.log_density_at_truth is not None  # answers_of was given the truth
        labels_floor_km, _ = oracle_of(lab.truth_m)
        print(
            f"  labels {len(lab.truth_m):7d}: fit {fit_s:7.1f} s  ({fit_s / len(lab.truth_m) * 1e3:.2f} ms per label)  "
            f"answer {answer_ms:.1f} ms per transmission  median {km:.1f} km = "
            f"{km / oracle_median_km:.2f} × oracle (the labels' floor {labels_floor_km / oracle_median_km:.2f} ×), "
            f"NLL {-ans.log_density_at_truth.mean():.2f}",
            flush=True,
        )


def label_budgets(truth_file: Path, sim: Path, imported: Path, args: argparse.Namespace) -> None:
    """Fit the map at each label budget on the imported store and print its answers against the baselines."""

    truth = scenario_from_dict(yaml.safe_load(truth_file.read_text()))
    scenario = load_scenario(MAP_SCENARIO)
    params = FeatureParams.from_scenario(scenario)
    train, test = read_split(imported / "train.h5", params), read_split(imported / "test.h5", params)
    with h5py.File(sim / "test.h5", "r") as f:
        sim_ll, tx_height_m = f["tx_lat_lon"][:], f["oracle/tx_height_m"][:]
        gain_offset_db = f["oracle/gain_offset_db"][:]
    twin = matching_rows(sim_ll, test.lat_lon)
    n_heard = test.heard.sum(1)
    print(
        f"{MAP_SCENARIO}: {len(train.truth_m)} training, {len(test.truth_m)} test transmissions imported; "
        f"test heard by 1/2/3/4+: "
        + " / ".join(str(int(np.sum(n_heard == k))) for k in (1, 2, 3))
        + f" / {int(np.sum(n_heard >= 4))}"
    )

    wc = weighted_centroid(test.power_dbm, test.heard, scenario.receiver_positions_m())
    wc_err = np.linalg.norm(wc - test.truth_m, axis=1)
    meas = test.measured

    def oracle_of(
        hidden: tuple[int, ...] = (), height_known: bool = False, known_at_m: np.ndarray | None = None
    ) -> MapAnswers:
        h = tx_height_m[twin]
        return oracle_answers(
            truth,
            gain_offset_db,
            h,
            meas.snr_db,
            meas.noise_dbm,
            meas.present,
            test.truth_m,
            args.spacing_m,
            hidden=hidden,
            height_known=height_known,
            known_at_m=known_at_m,
        )

    t0 = time.perf_counter()
    oracle = oracle_of()
    print(f"oracle (the transmitter's height marginalised, as its power): {time.perf_counter() - t0:.0f} s")
    oracle_err = np.linalg.norm(oracle.mean_m - test.truth_m, axis=1)
    print_summary("", summary("centroid", wc, None, test, wc_err, oracle_err))
    print_summary("", summary("oracle", oracle.mean_m, oracle.cov_m2, test, wc_err, oracle_err, oracle))
    told = oracle_of(height_known=True)
    print("oracle|h: told each transmitter's height (what `heimdall evaluate` reports)")
    print_summary("", summary("oracle|h", told.mean_m, told.cov_m2, test, wc_err, oracle_err, told))
    components = truth.environment.shadowing.components
    partial_err = None
    if len(components) > 1:
        # the floor of an estimator that resolves every shadowing component but the finest
        finest = int(np.argmin([c.correlation_m for c in components]))
        partial = oracle_of((finest,))
        partial_err = np.linalg.norm(partial.mean_m - test.truth_m, axis=1)
        print(f"oracle−{components[finest].correlation_m / 1e3:g}km: the oracle without its finest shadowing component")
        print_summary("", summary("oracle−", partial.mean_m, partial.cov_m2, test, wc_err, oracle_err, partial))

    n_train = len(train.truth_m)
    verdicts = []
    for b in args.budgets.split(","):
        k = n_train if b == "all" else min(int(b), n_train)
        t0 = time.perf_counter()
        if k:
            rows = slice(0, k)
            lab = Labelled(
                train.measured.snr_db[rows],
                train.measured.noise_dbm[rows],
                train.measured.present[rows],
                train.truth_m[rows],
            )
            m = fit_radio_map(scenario, lab, options=MapOptions(args.spacing_m, seed=args.seed))
        else:
            m = fit_radio_map(scenario, None, train.measured, MapOptions(args.spacing_m, seed=args.seed))
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ans = answers_of(m, test.measured.snr_db, test.measured.noise_dbm, test.measured.present, test.truth_m)
        answer_ms = (time.perf_counter() - t0) / len(test.truth_m) * 1e3
        s = summary("map", ans.mean_m, ans.cov_m2, test, wc_err, oracle_err, ans)
        print(
            f"labels {k} ({m.info['kind']}, shape {m.info.get('shape')}): fit {fit_s:.0f} s, "
            f"{answer_ms:.0f} ms per answer (all classes, posterior search included)"
        )
        print_summary(str(k), s)
        r = s["rows"]["all"]
        if b == "all" and partial_err is not None:
            ratio = np.median(np.linalg.norm(ans.mean_m - test.truth_m, axis=1)) / np.median(partial_err)
            print(f"         {k} labels: {ratio:.2f} × the oracle without its finest shadowing component")
        if b == "all":
            # what any map learned from these labels can reach: the fields known exactly at the labelled positions
            floor = oracle_of(known_at_m=train.truth_m[:k])
            floor_err = np.linalg.norm(floor.mean_m - test.truth_m, axis=1)
            print(
                f"oracle|{k}: the oracle with its fields kriged from their exact values at the {k} labelled positions"
            )
            print_summary("", summary("oracle|L", floor.mean_m, floor.cov_m2, test, wc_err, oracle_err, floor))
            floor_ratio = float(np.median(floor_err) / np.median(oracle_err))
            print(
                f"         {k} labels: {r['median_km'] * 1e3 / np.median(floor_err):.2f} × the labels' floor, "
                f"which is {floor_ratio:.2f} × the oracle"
            )
            verdicts.append(
                (
                    f"all ({k}) labels ≤ {TARGET_RATIO_ORACLE_ALL} × oracle (the labels' floor: {floor_ratio:.2f} ×)",
                    r["oracle_ratio"],
                    r["oracle_ratio"] <= TARGET_RATIO_ORACLE_ALL,
                )
            )
        elif k == 0:
            verdicts.append(
                (
                    f"0 labels ≤ {TARGET_RATIO_WC_NO_LABELS} × centroid",
                    r["wc_ratio"],
                    r["wc_ratio"] <= TARGET_RATIO_WC_NO_LABELS,
                )
            )
            verdicts.append(
                ("0 labels: 95 % regions hold 90–97 %", r["hpd95"], TARGET_HPD95[0] <= r["hpd95"] <= TARGET_HPD95[1])
            )
        elif k in TARGET_RATIO_WC:
            verdicts.append(
                (f"{k} labels ≤ {TARGET_RATIO_WC[k]} × centroid", r["wc_ratio"], r["wc_ratio"] <= TARGET_RATIO_WC[k])
            )
        verdicts.append((f"{k} labels: answered ≥ 0.90", r["answered"], r["answered"] >= 0.9))
        classes = [c for c in s["rows"].values() if c["n"] >= MIN_CLASS_TRANSMISSIONS]
        worst = max(abs(c["hpd95"] - 0.95) for c in classes)
        verdicts.append(
            (
                f"{k} labels: 95 % coverage within 4 points in every heard class (n ≥ {MIN_CLASS_TRANSMISSIONS})",
                worst,
                worst <= 0.04,
            )
        )
    print("targets:")
    for name, value, ok in verdicts:
        print(f"  {'met    ' if ok else 'NOT MET'} {name}: {value:.3f}")


def _dataset_names(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def labelled_subset(imported: Path, out: Path, n_labels: int) -> Path:
    """A copy of the imported store whose train and val splits hold only its first n_labels labels (80 % / 20 %),
    the test split whole: a network that has n_labels labels in all."""
    counts = {"train": int(round(0.8 * n_labels)), "val": n_labels - int(round(0.8 * n_labels)), "test": None}
    out.mkdir(parents=True, exist_ok=True)
    for split, n in counts.items():
        if (out / f"{split}.h5").exists():
            continue
        with h5py.File(imported / f"{split}.h5", "r") as src, h5py.File(out / f"{split}.h5.partial", "w") as dst:
            total = int(src.attrs["n_samples"])
            rows = total if n is None else min(n, total)
            dst.attrs.update(dict(src.attrs))
            dst.attrs["n_samples"] = rows

            for name in _dataset_names(src):
                ds = src[name]
                dst.create_dataset(name, data=ds[:rows] if ds.ndim and ds.shape[0] == total else ds[...])
                dst[name].attrs.update(dict(ds.attrs))
        (out / f"{split}.h5.partial").rename(out / f"{split}.h5")
    return out


def network_answers(checkpoint: Path, store: Path) -> tuple[np.ndarray, np.ndarray]:
    """The network's mean [n, 2] m and covariance [n, 2, 2] m² on the store's test split."""
    from heimdall.datasets.loader import StoreDataset
    from heimdall.train.task import load_task, predict_numpy

    arrays = StoreDataset([store / "test.h5"]).read_split()
    rx = np.broadcast_to(arrays.rx_position_m, (len(arrays.target_m), *arrays.rx_position_m.shape))
    return predict_numpy(load_task(checkpoint).net, arrays.features, rx.astype(np.float32).copy(), arrays.present)


def twin_transfer(imported: Path, work: Path, args: argparse.Namespace) -> None:
    """The network with --twin labels alone against pretrained on their twin and fine-tuned (module docstring)."""
    k = args.twin
    real = labelled_subset(imported, work / f"labels-{k}", k)
    twin = work / f"twin-{k}"
    runs = work / f"runs-{k}"
    uri = f"sqlite:///{work / 'mlflow.db'}"
    train = ["--tracking-uri", uri, "--no-export", "--threads", str(args.threads), "--max-time-minutes", "0"]
    t0 = time.perf_counter()
    if not (twin / "test.h5").exists():
        print(f"twin of {real.name}: simulating {args.twin_n} transmissions …", flush=True)
        _quiet(
            "simulate", "--like", str(real), "--out", str(twin), "-n", str(args.twin_n), "--quiet", "--iq-samples", "0"
        )
    report = json.loads((twin / "twin.json").read_text())
    p = report["propagation"]
    print(
        f"twin: {report['how']}; {time.perf_counter() - t0:.0f} s"
        + (f"; fitted shape {p['path_loss_model']}, σ {p['shadowing_sigma_db']:.1f} dB" if p["fitted"] else "")
    )
    plan = {
        "alone": ["--data-dir", str(real), "--epochs", str(args.epochs)],
        "twin": ["--data-dir", str(twin), "--epochs", str(args.epochs)],
        "fine": [
            "--data-dir",
            str(real),
            "--epochs",
            str(args.epochs),
            "--init-from",
            str(runs / "twin" / "best.ckpt"),
        ],
    }
    test = read_split(real / "test.h5", FeatureParams.from_scenario(load_scenario(MAP_SCENARIO)))
    wc = weighted_centroid(test.power_dbm, test.heard, load_scenario(MAP_SCENARIO).receiver_positions_m())
    wc_err = np.linalg.norm(wc - test.truth_m, axis=1)
    for name, flags in plan.items():
        ckpt = runs / name / "best.ckpt"
        t0 = time.perf_counter()
        if not ckpt.exists():
            _quiet("train", *flags, "--checkpoint-dir", str(runs / name), *train)
        mean, cov = network_answers(ckpt, real)
        print(f"network {name}: trained in {time.perf_counter() - t0:.0f} s")
        no_oracle = np.full_like(wc_err, np.nan)  # the oracle's rows are label_budgets' (same test split)
        print_summary(str(k), summary(f"net-{name}", mean, cov, test, wc_err, no_oracle))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("workspace/bench-labels"), help="data folder (reused)")
    ap.add_argument("-n", type=int, default=4000, help="transmissions simulated and imported (all splits)")
    ap.add_argument("--budgets", default="0,100,400,1500,all", help="label budgets ('all': every training label)")
    ap.add_argument("--scaling", default="1500,10000,100000", help="label counts for the fit-time scaling ('' skips)")
    ap.add_argument("--spacing-m", type=float, default=500.0, help="map grid spacing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--twin", type=int, default=0, help="labels for the network twin-transfer rows (0 skips)")
    ap.add_argument("--twin-n", type=int, default=20000, help="transmissions of the simulated twin")
    ap.add_argument("--epochs", type=int, default=40, help="epochs of each network run (--twin)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the network runs (--twin)")
    args = ap.parse_args()

    truth_file, sim, imported = make_data(args.work, args.n, args.seed)
    if args.budgets:
        label_budgets(truth_file, sim, imported, args)
    if args.twin:
        twin_transfer(imported, args.work, args)
    if args.scaling:
        fit_scaling(truth_file, args.work, [int(x) for x in args.scaling.split(",")], args.spacing_m, args.seed)


if __name__ == "__main__":
    main()
