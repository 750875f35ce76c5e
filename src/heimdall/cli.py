"""The `heimdall` command. Heavy modules are imported inside each command so `--help` is quick.

Flags are spelled with dashes; the underscore spellings (and the older names of a few flags) are accepted as
aliases that --help does not show. Defaults come from the dataclasses that own them (TrainConfig, DatasetSpec,
ImportOptions, ServeSettings). `main(argv)` runs in-process and returns an exit code (tests call it directly);
`run()` is the console entry point.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from heimdall.commands.logs import configure_logging
from heimdall.datasets.spec import MATCH_TOLERANCE_M, DatasetSpec, ImportOptions
from heimdall.errors import HeimdallError
from heimdall.release import CHAMPION, MODEL_NAME
from heimdall.scenario import DEFAULT_SCENARIO
from heimdall.serve.settings import ServeSettings
from heimdall.train.config import LOCALIZERS, TrainConfig

DEBUG_VARIABLE = "HEIMDALL_DEBUG"


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/N (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"expected 0 ≤ i < N, got {text!r}")
    return (i, n)


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 0 or sum(parts) <= 0:
        raise argparse.ArgumentTypeError(f"expected three non-negative fractions train,val,test, got {text!r}")
    return parts


def _sha256(text: str) -> str:
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text.lower()):
        raise argparse.ArgumentTypeError(f"expected 64 hex digits (a sha256), got {text[:80]!r}")
    return text.lower()


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = 0.0
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def _tile_url(text: str) -> str:
    from heimdall.serve.page import tile_origin

    try:
        tile_origin(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    return text


def _flag(p: argparse._ActionsContainer, name: str, *hidden: str, short: str | None = None, **kwargs: Any) -> None:
    """Add the flag `name` (dashes; and `short`) with its underscore spelling and `hidden` as aliases --help does not
    show."""
    dest = kwargs.pop("dest", name.lstrip("-").replace("-", "_"))
    p.add_argument(*([short] if short else []), name, dest=dest, **kwargs)
    aliases = [a for a in dict.fromkeys(("--" + name.lstrip("-").replace("-", "_"), *hidden)) if a != name]
    if aliases:
        quiet = {k: v for k, v in kwargs.items() if k not in ("help", "required", "default", "metavar")}
        p.add_argument(*aliases, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **quiet)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command and flag."""
    parser = argparse.ArgumentParser(
        prog="heimdall",
        description="Locate VHF/UHF transmitters from multi-receiver recordings: simulate, train, evaluate, serve.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    spec, imports, serving = DatasetSpec(), ImportOptions(), ServeSettings()

    p = sub.add_parser(
        "simulate",
        help="simulate a scenario into a training store (train/val/test) or SigMF",
        description="Simulate transmissions of a scenario and write train/val/test store files, "
        "or (--format sigmf) one SigMF collection per transmission.",
    )
    _flag(
        p,
        "--scenario",
        help=f"built-in scenario name or YAML file (default: {DEFAULT_SCENARIO}; with --like the store's)",
    )
    _flag(
        p,
        "--like",
        metavar="STORE",
        help="simulate a twin of an imported store: its receivers, channel and recording chain, its measured noise "
        "floors and, with labels, its propagation fitted on them (docs/RADIOMAP.md); writes OUT/twin.json",
    )
    _flag(
        p,
        "--out",
        help="output folder (default: $HEIMDALL_WORKSPACE/data/<scenario>, "
        "or $HEIMDALL_WORKSPACE/sigmf/<scenario> with --format sigmf)",
    )
    _flag(
        p,
        "--format",
        choices=["store", "sigmf"],
        default="store",
        help="store: HDF5 training store; sigmf: a folder of SigMF collections per split (default: store)",
    )
    _flag(
        p,
        "--datatype",
        choices=["cf32_le", "ci16_le", "ci8", "cu8"],
        default="cf32_le",
        help="sample type of SigMF recordings (default: cf32_le, lossless)",
    )
    _flag(
        p,
        "--n-transmissions",
        short="-n",
        type=_positive_int,
        default=spec.n_transmissions,
        help=f"transmissions over all splits (default: {spec.n_transmissions}; each SigMF transmission is "
        "about 16 KiB per receiver in cf32_le)",
    )
    _flag(p, "--seed", type=int, default=spec.seed, help=f"dataset seed (default: {spec.seed})")
    _flag(
        p,
        "--workers",
        type=_positive_int,
        default=os.cpu_count() or 1,
        help="worker processes (default: CPU count); the output does not depend on it",
    )
    _flag(p, "--shard", type=_shard, default=spec.shard, help="make shard i of N (i/N) for cluster generation")
    _flag(
        p,
        "--splits",
        type=_fractions,
        default=spec.fractions,
        help=f"train,val,test fractions (default: {','.join(f'{f:g}' for f in spec.fractions)})",
    )
    _flag(
        p,
        "--split-mode",
        choices=["random", "spatial"],
        default=spec.split_mode,
        help="random, or spatial blocks (tests generalisation to unseen places)",
    )
    _flag(
        p,
        "--spatial-block-m",
        type=float,
        default=spec.spatial_block_m,
        help=f"block size of the spatial split in metres (default: {spec.spatial_block_m:g})",
    )
    _flag(
        p,
        "--iq-samples",
        type=int,
        default=spec.iq_per_split,
        help=f"keep raw IQ of the first K transmissions of each split (default: {spec.iq_per_split})",
    )
    _flag(
        p,
        "--shadowing",
        choices=["fixed", "iid"],
        help="override the scenario's shadowing mode (iid: the control without a learnable radio map)",
    )
    _flag(p, "--quiet", action="store_true", help="no progress bar")

    _add_train_parser(sub)

    p = sub.add_parser(
        "evaluate",
        help="compare a model with classical estimators, the radio map, the oracle and the CRLB",
        description="Evaluate a checkpoint or ONNX model on a test split against the weighted "
        "centroid, classical RSS maximum likelihood, the radio-map posterior (fitted on the training split), "
        "the map × model hybrid, the oracle (simulated data) and the Cramér–Rao bound; metrics overall, "
        "inside/outside the receivers' hull and by receivers heard (1, 2, 3, 4+).",
    )
    _flag(p, "--model", help="best.ckpt or model.onnx (default: the newest run in the workspace)")
    _flag(p, "--data-dir", "--data", help="store folder (its test split) or a test .h5 (default: the run's data)")
    _flag(p, "--out", help="output folder (default: <run folder>/evaluation)")
    _flag(
        p,
        "--grid-spacing-m",
        type=float,
        help="grid of the classical search in metres (default: from the network's geometry, 4 map cells; 2000 for "
        "nw-italy)",
    )
    _flag(
        p,
        "--map-spacing-m",
        type=float,
        help="grid of the radio-map, hybrid and oracle posteriors in metres (default: from the network's geometry, "
        "500 for nw-italy; 0: leave them out)",
    )
    _flag(p, "--max-samples", type=_positive_int, help="evaluate only the first N test transmissions")
    _flag(p, "--tracking-uri", help="MLflow tracking URI (default: the run's)")
    _flag(p, "--no-mlflow", action="store_true", help="do not log to MLflow")
    _flag(p, "--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX, store it and register it in MLflow",
        description="Export a checkpoint to one validated ONNX file, publish it to the model store "
        f"(local folder or s3://bucket/prefix) and register it as {MODEL_NAME}.",
    )
    _flag(p, "--checkpoint", required=True, help="a Heimdall checkpoint (best.ckpt)")
    _flag(p, "--out", help="ONNX file to write (default: model.onnx beside the checkpoint)")
    _flag(p, "--store", help="model store: a folder or s3://bucket/prefix (default: workspace/models)")
    _flag(p, "--no-store", action="store_true", help="only write the ONNX file")
    _flag(p, "--name", default=MODEL_NAME, help=f"model name in the store and the registry (default {MODEL_NAME})")
    _add_s3_options(p)
    _flag(
        p,
        "--signing-key",
        metavar="FILE",
        help="sign the manifests with this ed25519 private key (PEM) or HMAC key file "
        "(default $HEIMDALL_SIGNING_KEY_FILE; none: unsigned)",
    )
    _flag(
        p,
        "--data-dir",
        "--eval-data",
        "--eval_data",
        help="store folder (its test split) or test .h5 the champion rule judges on (default: the test split of "
        "the training data)",
    )
    _flag(p, "--no-register", action="store_true", help="do not register in MLflow")
    _flag(p, "--tracking-uri", help="MLflow tracking URI (default: the training run's)")

    p = sub.add_parser(
        "serve",
        help="serve the model over HTTP (FastAPI + ONNX Runtime)",
        description="Serve localization over HTTP. The model comes from a file, the model store "
        "or the MLflow registry (default: alias champion in the workspace's registry).",
    )
    _add_model_source(p)
    _flag(p, "--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    _flag(p, "--port", type=int, default=8000, help="port (default 8000)")
    _flag(p, "--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    _flag(
        p,
        "--max-batch",
        type=int,
        default=serving.max_batch,
        help=f"micro-batch size limit (default {serving.max_batch})",
    )
    _flag(
        p,
        "--max-wait-ms",
        type=float,
        default=serving.max_wait_ms,
        help=f"extra wait for a fuller micro-batch (ms, default {serving.max_wait_ms:g}: batch what is already "
        "waiting)",
    )
    _flag(
        p,
        "--max-inflight",
        type=_positive_int,
        default=serving.max_inflight,
        help=f"transmissions worked on at once; a request that does not fit answers 429 (default "
        f"{serving.max_inflight})",
    )
    _flag(
        p,
        "--max-requests",
        type=_positive_int,
        default=serving.max_requests,
        help=f"requests with a body in progress at once, beyond which 429 (default {serving.max_requests})",
    )
    _flag(
        p,
        "--match-tolerance-m",
        type=float,
        default=serving.match_tolerance_m,
        help=f"an ad-hoc receiver within this distance of a model receiver is that receiver; a receiver given by "
        f"id and position must be this close to its table position (default {MATCH_TOLERANCE_M:g} m)",
    )
    _flag(
        p,
        "--cache-size",
        type=int,
        default=serving.cache_size,
        help=f"answers kept in the LRU cache (default {serving.cache_size})",
    )
    _flag(
        p,
        "--map-threads",
        type=_positive_int,
        default=serving.map_threads,
        help=f"threads computing the radio-map posteriors of a model that carries a map (default "
        f"{serving.map_threads})",
    )
    _flag(
        p,
        "--max-body-mb",
        type=float,
        default=serving.max_body_bytes / 1024**2,
        help=f"request body limit (MB, default {serving.max_body_bytes / 1024**2:g})",
    )
    _flag(
        p,
        "--tile-url",
        type=_tile_url,
        default=serving.tile_url,
        help="basemap tile URL template of the map page at / (default none: receivers, area and graticule "
        "only), e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png (mind the tile server's usage policy)",
    )
    _flag(
        p,
        "--live-view",
        action="store_true",
        help="turn on the map page's live view (GET /v1/events): the localizations asked to be published (the "
        "page's own, or ?publish=true) pushed to every page that can reach the service (default off)",
    )
    _flag(
        p,
        "--events-size",
        type=_positive_int,
        default=serving.events_size,
        help=f"localizations the map page's live view keeps in memory (default {serving.events_size})",
    )
    _flag(
        p,
        "--max-event-streams",
        type=_positive_int,
        default=serving.max_event_streams,
        help=f"live-view event streams open at once, beyond which 429 (default {serving.max_event_streams})",
    )
    _flag(
        p,
        "--max-event-streams-per-client",
        type=_positive_int,
        default=serving.max_event_streams_per_client,
        help=f"live-view event streams open at once from one client address, beyond which 429 (default "
        f"{serving.max_event_streams_per_client})",
    )
    _flag(
        p,
        "--event-idle-s",
        type=_positive_float,
        default=serving.event_idle_s,
        help=f"a live-view stream with nothing to send for this long is ended; an open page reconnects (s, default "
        f"{serving.event_idle_s:g})",
    )
    _flag(
        p,
        "--limit-concurrency",
        type=_positive_int,
        default=serving.limit_concurrency,
        help=f"connections and requests at once, beyond which every request answers 503 (default "
        f"{serving.limit_concurrency})",
    )
    _flag(
        p,
        "--keep-alive-s",
        type=_positive_int,
        default=serving.keep_alive_s,
        help=f"an idle keep-alive connection is closed after this (s, default {serving.keep_alive_s})",
    )
    _flag(
        p,
        "--header-timeout-s",
        type=_positive_float,
        default=serving.header_timeout_s,
        help=f"a request's line and headers must arrive within this, else the connection is closed (s, default "
        f"{serving.header_timeout_s:g})",
    )
    _flag(
        p,
        "--body-timeout-s",
        type=_positive_float,
        default=serving.body_timeout_s,
        help=f"a request body that sends nothing for this long answers 408 (s, default {serving.body_timeout_s:g})",
    )

    p = sub.add_parser(
        "predict",
        help="localize the transmissions of a store, SigMF collections or a power-reading table (no HTTP)",
        description="Run the service's model (file, store or registry) on every transmission of a "
        "store or of SigMF collections and write a CSV (or JSON) of positions and ellipses; a model that carries "
        "a radio map answers with the map × network posterior, its modes and regions.",
    )
    p.add_argument(
        "data",
        help="a store .h5 file, a store folder (its --split), a .sigmf-collection, a folder of SigMF collections, "
        "or a power-reading table (.csv, .jsonl: one answer per transmission id)",
    )
    _flag(
        p,
        "--split",
        default="test",
        help="split of a store folder (default test; 'unlabelled' for imported transmissions without a known position)",
    )
    _flag(p, "--out", help="file to write (default predictions.<format>)")
    _flag(
        p,
        "--format",
        choices=("csv", "json", "geojson", "kml"),
        help="csv (one row per transmission), json (the answers as the service gives them: with a radio map their "
        "modes and regions), geojson or kml (the position and the 95 %% ellipse of each, for QGIS or Google "
        "Earth); default: the suffix of --out, else csv",
    )
    _flag(
        p,
        "--match-tolerance-m",
        type=float,
        default=MATCH_TOLERANCE_M,
        help=f"a SigMF recording within this distance of a model receiver is that receiver "
        f"(default {MATCH_TOLERANCE_M:g} m)",
    )
    _flag(
        p,
        "--skip-invalid",
        action="store_true",
        help="skip invalid SigMF collections or table transmissions (reported) instead of stopping",
    )
    _flag(p, "--quiet", action="store_true", help="no progress bar")
    _add_model_source(p)
    _flag(
        p,
        "--threads",
        type=int,
        default=2,
        help="ONNX Runtime intra-op threads, and threads computing a radio map's posteriors (default 2)",
    )

    p = sub.add_parser(
        "import",
        help="import a folder of SigMF collections, or a table of power readings, into a training store",
        description="Read every *.sigmf-collection under DIR (one transmission each, one recording "
        "per receiver), or a power-reading table (CSV or JSON Lines, one row per transmission and receiver: "
        "docs/DATA.md), check it, and write a training store: labelled transmissions into "
        "train/val/test (kept from train/val/test sub-folders, else a seeded split), "
        "unlabelled ones into the 'unlabelled' split for prediction.",
    )
    p.add_argument(
        "input",
        metavar="DIR|TABLE",
        help="folder of SigMF collections, or a power-reading table (.csv, .jsonl) (only read, never modified)",
    )
    _flag(
        p,
        "--format",
        choices=("sigmf", "csv", "jsonl"),
        help="what the input is (default: csv or jsonl by a file's suffix, sigmf for a folder)",
    )
    _flag(p, "--out", required=True, help="store folder to write")
    _flag(
        p,
        "--scenario",
        help="scenario giving the channel frequency, feature settings and known receivers (built-in name or YAML "
        "file; default: built from the recordings and written to OUT/scenario.yaml)",
    )
    _flag(
        p,
        "--skip-invalid",
        action="store_true",
        help="import the valid collections and report each invalid one (default: stop at the first)",
    )
    _flag(
        p,
        "--match-tolerance-m",
        type=float,
        default=imports.match_tolerance_m,
        help=f"a recording within this distance of a known receiver is that receiver "
        f"(default {imports.match_tolerance_m:g} m)",
    )
    _flag(
        p,
        "--new-receiver-height-m",
        type=float,
        default=imports.new_receiver_height_m,
        help=f"antenna height above terrain given to receivers not in the scenario (default "
        f"{imports.new_receiver_height_m:g} m)",
    )
    _flag(
        p,
        "--splits",
        type=_fractions,
        default=imports.fractions,
        help="train,val,test fractions for collections outside split folders (default: "
        f"{','.join(f'{f:g}' for f in imports.fractions)})",
    )
    _flag(p, "--seed", type=int, default=imports.seed, help=f"seed of the split assignment (default {imports.seed})")
    _flag(
        p,
        "--iq-samples",
        type=int,
        default=imports.iq_per_split,
        help=f"keep the conformed IQ of the first K transmissions of each split (default {imports.iq_per_split})",
    )
    _flag(p, "--overwrite", action="store_true", help="replace a store already in --out")
    _flag(p, "--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser(
        "map",
        help="fit a radio map on a store and attach it to a model, or update a model's map with new labels",
        description="fit: fit the radio map on STORE's labelled training split (self-calibrated on its "
        "unlabelled recordings when it has no labels), choose the map × network exponents on its validation "
        "split, and write the network model with the map attached to --out. update: add the labelled SigMF "
        "recordings of --labels to the map of a map-carrying --model, refit the map (the network is unchanged) and "
        "write the new version to --out. Either can also go to a model store (--store) and the registry "
        "(--register) (docs/RADIOMAP.md).",
    )
    p.add_argument("action", choices=["fit", "update"])
    p.add_argument(
        "data_store",
        metavar="store",
        help="store folder (train.h5 / val.h5, or unlabelled.h5) with the model's receivers",
    )
    _flag(
        p,
        "--model",
        help="fit: the network model (model.onnx); update: the map-carrying model (default: --store's latest version "
        "or --version, else the registry's --alias at --tracking-uri; the new version goes back there with --store or "
        "--register)",
    )
    _flag(p, "--out", required=True, help="ONNX file to write (the model with the map; its manifest beside it)")
    _flag(p, "--labels", metavar="DIR", help="update: folder of labelled SigMF collections of the model's receivers")
    _flag(
        p,
        "--spacing-m",
        type=float,
        help="grid cell side of the map in metres (default: fit from the network's geometry, update the model's own)",
    )
    _flag(
        p,
        "--signing-key",
        metavar="FILE",
        help="sign the manifests with this ed25519 private key (PEM) or HMAC key file "
        "(default $HEIMDALL_SIGNING_KEY_FILE; none: unsigned)",
    )
    _flag(p, "--store", help="also publish the new model to this model store as its next version (folder or s3://…)")
    _add_s3_options(p)
    _flag(
        p,
        "--register",
        action="store_true",
        help="also register it in MLflow (champion only if it beats the champion on the evaluation set)",
    )
    _flag(p, "--tracking-uri", help="MLflow tracking URI of the registry (default $MLFLOW_TRACKING_URI or sqlite)")
    _flag(p, "--version", type=int, help="update without --model: the --store version to update (default the latest)")
    _flag(p, "--alias", default=CHAMPION, help=f"update without --model or --store: the registry alias ({CHAMPION})")
    _flag(
        p,
        "--verify-key",
        metavar="FILE",
        help="update without --model: refuse a stored or registered model whose manifest is not signed by this key "
        "(default $HEIMDALL_VERIFY_KEY_FILE)",
    )
    _flag(
        p,
        "--eval-data",
        help="store folder or test .h5 the champion rule judges on (default: STORE's test split if it has one)",
    )
    _flag(p, "--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser(
        "inspect",
        help="print the metadata inside an exported ONNX model",
        description="Print the metadata stored inside a Heimdall ONNX model.",
    )
    p.add_argument("model", help="path to model.onnx")

    p = sub.add_parser(
        "scenario",
        help="list, show or validate scenarios",
        description="List built-in scenarios, print one, or validate a scenario file.",
    )
    p.add_argument("action", choices=["list", "show", "validate"])
    p.add_argument("name", nargs="?", default=DEFAULT_SCENARIO, help="built-in name or YAML file")
    _add_debug_flag(parser, sub)
    return parser


def _add_debug_flag(parser: argparse.ArgumentParser, sub: argparse._SubParsersAction) -> None:
    """--debug before the command or after it (the command's copy leaves the value alone when it is not given)."""
    text = f"print the traceback of an unexpected error, to report a bug (or set {DEBUG_VARIABLE}=1)"
    parser.add_argument("--debug", action="store_true", help=text)
    for command in sub.choices.values():
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=text)


def _add_s3_options(p: argparse.ArgumentParser) -> None:
    _flag(p, "--s3-endpoint-url", help="S3 endpoint (MinIO, SeaweedFS); default AWS or $AWS_ENDPOINT_URL")
    _flag(p, "--s3-access-key", help="default $AWS_ACCESS_KEY_ID or the AWS credentials file")
    _flag(
        p,
        "--s3-secret-key",
        help="visible to other users in the process list: prefer $AWS_SECRET_ACCESS_KEY or "
        "the AWS credentials file ($AWS_SHARED_CREDENTIALS_FILE, ~/.aws/credentials)",
    )


def _add_model_source(p: argparse.ArgumentParser) -> None:
    """Where `serve` and `predict` take the model from (default: the registry's champion), and how it is trusted."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model-file", dest="model_file", help="an exported model.onnx")
    src.add_argument("--store", help="model store (folder or s3://bucket/prefix); latest version unless --version")
    p.add_argument("--model_file", dest="model_file", help=argparse.SUPPRESS, default=argparse.SUPPRESS)
    _flag(p, "--version", type=int, help="version in the model store")
    _flag(
        p,
        "--tracking-uri",
        "--registry-uri",
        "--registry_uri",
        help="MLflow tracking URI of the registry (default $MLFLOW_TRACKING_URI, else the workspace's)",
    )
    _flag(p, "--name", default=MODEL_NAME, help=f"model name in the store / registry (default {MODEL_NAME})")
    _flag(p, "--alias", default=CHAMPION, help=f"registry alias (default {CHAMPION})")
    _add_s3_options(p)
    _flag(
        p,
        "--verify-key",
        metavar="FILE",
        help="refuse models whose manifest is not signed by this ed25519 public key (PEM) or HMAC key "
        "file (default $HEIMDALL_VERIFY_KEY_FILE)",
    )
    _flag(p, "--model-sha256", type=_sha256, metavar="HEX", help="refuse any model whose bytes do not have this sha256")


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    d = TrainConfig()
    p = sub.add_parser(
        "train",
        help="train a localization model (default: the built-in scenario, simulated if missing)",
        description="Train LocalizationNet with Lightning and track it with MLflow, then export, store and register "
        "the best checkpoint. Flags override --config; the resolved configuration is saved with the run.",
        argument_default=argparse.SUPPRESS,
    )
    _flag(p, "--config", help="YAML file of options (keys as the long flag names with underscores)")
    _flag(p, "--data-dir", help=f"store folder with train.h5/val.h5 (default: simulate {d.scenario})")
    _flag(p, "--epochs", type=int, help=f"maximum epochs (default {d.epochs}; early stopping usually ends sooner)")
    _flag(p, "--batch-size", type=int, help=f"batch size (default {d.batch_size})")
    _flag(p, "--learning-rate", "--lr", type=float, help=f"peak learning rate (default {d.learning_rate:g})")
    _flag(
        p,
        "--validation-split",
        "--val_split",
        "--val-split",
        type=float,
        help=f"fraction of train used for validation when the store has no val split (default {d.validation_split:g})",
    )
    _flag(p, "--num-workers", type=int, help=f"DataLoader worker processes (default {d.num_workers})")
    _flag(
        p,
        "--loader-memory-mb",
        type=float,
        help=f"store data each reading process keeps in memory, MB (default {d.loader_memory_mb:g}; the rest is "
        "read from disk)",
    )
    _flag(p, "--accelerator", choices=["cpu", "gpu", "auto"], help=f"cpu, gpu or auto (default {d.accelerator})")
    _flag(p, "--devices", help=f"devices per node: a count or 'auto' (default {d.devices})")
    _flag(p, "--num-nodes", type=int, help=f"nodes for multi-node DDP (default {d.num_nodes})")
    _flag(p, "--strategy", help=f"Lightning strategy, e.g. ddp (default {d.strategy})")
    _flag(p, "--seed", type=int, help=f"seed of data order, initialisation and dropout (default {d.seed})")
    _flag(p, "--checkpoint-dir", help="run folder for checkpoints (default workspace/runs/<run>)")
    _flag(
        p,
        "--checkpoint",
        help="with --export-only: the checkpoint to publish; with --resume-training: the run's last.ckpt",
    )
    _flag(
        p,
        "--export-only",
        action="store_true",
        help="publish --checkpoint (ONNX → model store → MLflow registry) without training",
    )
    _flag(
        p,
        "--resume-training",
        action="store_true",
        help="continue the run of --checkpoint RUN/last.ckpt (or --checkpoint-dir RUN) with its saved configuration "
        "and a fresh --max-time-minutes budget; options that cannot change (batch size, learning rate, "
        "architecture) are refused",
    )
    _flag(
        p,
        "--store",
        help="model store the model is published to: a folder or s3://bucket/prefix (default: workspace/models)",
    )
    _add_s3_options(p)
    _flag(
        p,
        "--eval-data",
        help="store folder (its test split) or test .h5 the registry's champion rule judges on (default: the "
        "training store's test split if it has one, else the model is registered as a challenger)",
    )
    _flag(p, "--json", action="store_true", help="print one JSON summary on stdout (human output goes to stderr)")
    _flag(
        p,
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="messages shown on stderr (default info); the run folder's train.log keeps info and above",
    )
    _flag(
        p,
        "--init-from",
        metavar="CKPT",
        help="start a new run from this checkpoint's weights (fine-tuning, e.g. simulation → a real network); its "
        "architecture must fit the run's",
    )
    _flag(
        p,
        "--keep-normalisation",
        action="store_true",
        help="with --init-from: keep the checkpoint's input normalisation (default: recomputed on the new data)",
    )
    _flag(p, "--experiment-name", help=f"MLflow experiment (default {d.experiment_name})")
    _flag(p, "--run-name-prefix", help=f"prefix of the run name (default {d.run_name_prefix})")
    _flag(p, "--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite)")
    _flag(p, "--max-time-minutes", type=float, help=f"wall-clock budget of the fit (default {d.max_time_minutes:g})")
    _flag(p, "--n-components", type=int, help=f"Gaussian mixture components of the head (default {d.n_components})")
    _flag(p, "--d-model", type=int, help=f"width of the network (default {d.d_model})")
    _flag(p, "--n-heads", type=int, help=f"attention heads (default {d.n_heads}; d_model must be a multiple)")
    _flag(p, "--n-layers", type=int, help=f"attention blocks (default {d.n_layers})")
    _flag(p, "--patience", type=int, help=f"early-stopping patience in epochs (default {d.patience})")
    _flag(
        p,
        "--feature-dropout",
        type=float,
        help=f"share of training transmissions seen with power only, no spectrum (default {d.feature_dropout:g})",
    )
    _flag(p, "--threads", type=int, help="torch intra-op threads (default: all cores)")
    _flag(
        p,
        "--dataset-size",
        type=int,
        help=f"transmissions when simulating the default dataset (default {d.dataset_size})",
    )
    _flag(p, "--no-export", dest="export", action="store_false", help="do not export ONNX after training")
    _flag(
        p,
        "--localizer",
        choices=LOCALIZERS,
        help=f"what is shipped (default {d.localizer}: the lowest validation NLL of the network, the radio map fitted "
        "on the store and their hybrid); network skips the map",
    )
    _flag(
        p,
        "--map-spacing-m",
        type=float,
        help="grid cell side of that radio map in metres (default: from the network's geometry)",
    )
    _flag(
        p,
        "--signing-key",
        metavar="FILE",
        help="sign the exported model's manifests with this ed25519 private key (PEM) or HMAC key file "
        "(default $HEIMDALL_SIGNING_KEY_FILE)",
    )


COMMANDS = {
    "simulate": ("heimdall.commands.simulate", "simulate_command"),
    "train": ("heimdall.commands.train", "train_command"),
    "evaluate": ("heimdall.commands.evaluate", "evaluate_command"),
    "export": ("heimdall.commands.export", "export_command"),
    "serve": ("heimdall.commands.serve", "serve_command"),
    "predict": ("heimdall.commands.predict", "predict_command"),
    "import": ("heimdall.commands.import_sigmf", "import_command"),
    "map": ("heimdall.commands.radio_map", "map_command"),
    "inspect": ("heimdall.commands.inspect", "inspect_command"),
    "scenario": ("heimdall.commands.scenario", "scenario_command"),
}


def debugging(args: argparse.Namespace) -> bool:
    """Whether errors print their traceback: --debug, or $HEIMDALL_DEBUG set to 1/true/yes/on."""
    return args.debug or os.environ.get(DEBUG_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default sys.argv[1:]) in-process; returns the exit code (errors printed as one
    line; with --debug or $HEIMDALL_DEBUG=1 after their traceback)."""
    args = build_parser().parse_args(argv)
    module, function = COMMANDS[args.command]
    try:
        command = getattr(importlib.import_module(module), function)
        configure_logging(getattr(args, "log_level", None) or "info")  # after the imports: libraries set theirs up
        return command(args)
    except HeimdallError as exc:
        if debugging(args):
            traceback.print_exc(file=sys.stderr)
        print(f"heimdall {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"heimdall {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an environment problem, not bad input: the traceback only when asked
        line = f"heimdall {args.command}: unexpected error: {type(exc).__name__}: {exc}"[:2000]
        if debugging(args):
            traceback.print_exc(file=sys.stderr)
        else:
            line += f"\n(run it again with --debug, or {DEBUG_VARIABLE}=1, to see the traceback and report the bug)"
        print(line, file=sys.stderr)
        return 1


def run() -> None:
    """Console entry point: exit with main()'s code."""
    sys.exit(main())
