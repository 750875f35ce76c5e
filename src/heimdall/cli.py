"""The `heimdall` command. Heavy modules are imported inside each command so `--help` is instant.

`main(argv)` runs in-process and returns an exit code (tests call it directly); `run()` is the console
entry point.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from heimdall.errors import HeimdallError
from heimdall.interchange import MATCH_TOLERANCE_M


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
    return parts  # type: ignore[return-value]


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heimdall",
        description="Locate VHF/UHF transmitters from multi-receiver recordings: simulate, train, evaluate, serve.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("simulate", help="simulate a scenario into a training store (train/val/test) or SigMF",
                       description="Simulate transmissions of a scenario and write train/val/test store files, "
                                   "or (--format sigmf) one SigMF collection per transmission.")
    p.add_argument("--scenario", default="nw-italy", help="built-in scenario name or YAML file (default: nw-italy)")
    p.add_argument("--out", help="output folder (default: $HEIMDALL_WORKSPACE/data/<scenario>, "
                                 "or $HEIMDALL_WORKSPACE/sigmf/<scenario> with --format sigmf)")
    p.add_argument("--format", choices=["store", "sigmf"], default="store",
                   help="store: HDF5 training store; sigmf: a folder of SigMF collections per split (default: store)")
    p.add_argument("--datatype", choices=["cf32_le", "ci16_le", "ci8", "cu8"], default="cf32_le",
                   help="sample type of SigMF recordings (default: cf32_le, lossless)")
    p.add_argument("-n", "--n-transmissions", "--n_transmissions", type=_positive_int, default=100_000,
                   help="transmissions over all splits (default: 100000; each SigMF transmission is "
                        "about 16 KiB per receiver in cf32_le)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    p.add_argument("--workers", type=_positive_int, default=os.cpu_count() or 1,
                   help="worker processes (default: CPU count); the output does not depend on it")
    p.add_argument("--shard", type=_shard, default=(0, 1), help="make shard i of N (i/N) for cluster generation")
    p.add_argument("--splits", type=_fractions, default=(0.8, 0.1, 0.1), help="train,val,test fractions")
    p.add_argument("--split-mode", "--split_mode", choices=["random", "spatial"], default="random",
                   help="random, or spatial blocks (tests generalisation to unseen places)")
    p.add_argument("--spatial-block-m", "--spatial_block_m", type=float, default=20_000.0,
                   help="block size of the spatial split in metres (default: 20000)")
    p.add_argument("--iq-samples", "--iq_samples", type=int, default=64,
                   help="keep raw IQ of the first K transmissions of each split (default: 64)")
    p.add_argument("--shadowing", choices=["fixed", "iid"],
                   help="override the scenario's shadowing mode (iid: the control without a learnable radio map)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    _add_train_parser(sub)

    p = sub.add_parser("evaluate", help="compare a model with classical estimators, the oracle and the CRLB",
                       description="Evaluate a checkpoint or ONNX model on a test split against the weighted "
                                   "centroid, classical RSS maximum likelihood, the oracle and the Cramér–Rao bound.")
    p.add_argument("--model", help="best.ckpt or model.onnx (default: the newest run in the workspace)")
    p.add_argument("--data", help="store folder (its test split) or a test .h5 (default: the run's data_dir)")
    p.add_argument("--out", help="output folder (default: <run folder>/evaluation)")
    p.add_argument("--grid-spacing-m", "--grid_spacing_m", type=float, default=2000.0,
                   help="grid of the classical and oracle searches in metres (default 2000)")
    p.add_argument("--max-samples", "--max_samples", type=_positive_int,
                   help="evaluate only the first N test transmissions")
    p.add_argument("--tracking-uri", "--tracking_uri", help="MLflow tracking URI (default: the run's)")
    p.add_argument("--no-mlflow", "--no_mlflow", action="store_true", help="do not log to MLflow")

    p = sub.add_parser("export", help="export a checkpoint to ONNX, store it and register it in MLflow",
                       description="Export a checkpoint to one validated ONNX file, publish it to the model store "
                                   "(local folder or s3://bucket/prefix) and register it as heimdall-localizer.")
    p.add_argument("--checkpoint", required=True, help="a Heimdall checkpoint (best.ckpt)")
    p.add_argument("--out", help="ONNX file to write (default: model.onnx beside the checkpoint)")
    p.add_argument("--store", help="model store: a folder or s3://bucket/prefix (default: workspace/models)")
    p.add_argument("--no-store", "--no_store", action="store_true", help="only write the ONNX file")
    p.add_argument("--name", default="heimdall-localizer", help="model name in the store and the registry")
    _add_s3_options(p)
    p.add_argument("--signing-key", "--signing_key", metavar="FILE",
                   help="sign the manifests with this ed25519 private key (PEM) or HMAC key file "
                        "(default $HEIMDALL_SIGNING_KEY_FILE; none: unsigned)")
    p.add_argument("--eval-data", "--eval_data", help="evaluation set for the champion rule (default: the test "
                   "split of the training data)")
    p.add_argument("--no-register", "--no_register", action="store_true", help="do not register in MLflow")
    p.add_argument("--tracking-uri", "--tracking_uri", help="MLflow tracking URI (default: the training run's)")

    p = sub.add_parser("serve", help="serve the model over HTTP (FastAPI + ONNX Runtime)",
                       description="Serve localization over HTTP. The model comes from a file, the model store "
                                   "or the MLflow registry (default: alias champion in the workspace's registry).")
    _add_model_source(p)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    p.add_argument("--max-batch", "--max_batch", type=int, default=64, help="micro-batch size limit")
    p.add_argument("--max-wait-ms", "--max_wait_ms", type=float, default=0.0,
                   help="extra wait for a fuller micro-batch (ms, default 0: batch what is already waiting)")
    p.add_argument("--max-inflight", "--max_inflight", type=_positive_int, default=2048,
                   help="transmissions worked on at once; a request that does not fit answers 429 (default 2048)")
    p.add_argument("--max-requests", "--max_requests", type=_positive_int, default=64,
                   help="requests with a body in progress at once, beyond which 429 (default 64)")
    p.add_argument("--match-tolerance-m", "--match_tolerance_m", type=float, default=MATCH_TOLERANCE_M,
                   help=f"an ad-hoc receiver within this distance of a model receiver is that receiver; a "
                        f"receiver given by id and position must be this close to its table position "
                        f"(default {MATCH_TOLERANCE_M:g} m)")
    p.add_argument("--cache-size", "--cache_size", type=int, default=4096, help="answers kept in the LRU cache")
    p.add_argument("--max-body-mb", "--max_body_mb", type=float, default=16.0, help="request body limit (MB)")

    p = sub.add_parser("predict", help="localize the transmissions of a store or SigMF collections (no HTTP)",
                       description="Run the service's model (file, store or registry) on every transmission of a "
                                   "store or of SigMF collections and write a CSV of positions and ellipses.")
    p.add_argument("data", help="a store .h5 file, a store folder (its --split), a .sigmf-collection, "
                                "or a folder of SigMF collections")
    p.add_argument("--split", default="test", help="split of a store folder (default test; 'unlabelled' for "
                                                  "imported transmissions without a known position)")
    p.add_argument("--out", default="predictions.csv", help="CSV to write (default predictions.csv)")
    p.add_argument("--match-tolerance-m", "--match_tolerance_m", type=float, default=MATCH_TOLERANCE_M,
                   help=f"a SigMF recording within this distance of a model receiver is that receiver "
                        f"(default {MATCH_TOLERANCE_M:g})")
    p.add_argument("--skip-invalid", "--skip_invalid", action="store_true",
                   help="SigMF: skip invalid collections (reported) instead of stopping")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_model_source(p)
    p.add_argument("--threads", type=int, default=2)

    p = sub.add_parser("import", help="import a folder of SigMF collections into a training store",
                       description="Read every *.sigmf-collection under DIR (one transmission each, one recording "
                                   "per receiver), check it, and write a training store: labelled collections into "
                                   "train/val/test (kept from train/val/test sub-folders, else a seeded split), "
                                   "unlabelled ones into the 'unlabelled' split for prediction.")
    p.add_argument("input", metavar="DIR", help="folder of SigMF collections (only read, never modified)")
    p.add_argument("--out", required=True, help="store folder to write")
    p.add_argument("--scenario", default="nw-italy",
                   help="scenario giving the channel frequency, feature settings and known receivers (default nw-italy)")
    p.add_argument("--skip-invalid", "--skip_invalid", action="store_true",
                   help="import the valid collections and report each invalid one (default: stop at the first)")
    p.add_argument("--match-tolerance-m", "--match_tolerance_m", type=float, default=MATCH_TOLERANCE_M,
                   help=f"a recording within this distance of a known receiver is that receiver "
                        f"(default {MATCH_TOLERANCE_M:g} m)")
    p.add_argument("--new-receiver-height-m", "--new_receiver_height_m", type=float, default=10.0,
                   help="antenna height above terrain given to receivers not in the scenario (default 10 m)")
    p.add_argument("--splits", type=_fractions, default=(0.8, 0.1, 0.1),
                   help="train,val,test fractions for collections outside split folders")
    p.add_argument("--seed", type=int, default=0, help="seed of the split assignment (default 0)")
    p.add_argument("--iq-samples", "--iq_samples", type=int, default=64,
                   help="keep the conformed IQ of the first K transmissions of each split (default 64)")
    p.add_argument("--overwrite", action="store_true", help="replace a store already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("inspect", help="print the metadata inside an exported ONNX model",
                       description="Print the metadata stored inside a Heimdall ONNX model.")
    p.add_argument("model", help="path to model.onnx")

    p = sub.add_parser("scenario", help="list, show or validate scenarios",
                       description="List built-in scenarios, print one, or validate a scenario file.")
    p.add_argument("action", choices=["list", "show", "validate"])
    p.add_argument("name", nargs="?", default="nw-italy", help="built-in name or YAML file")
    return parser


def _add_s3_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--s3-endpoint-url", "--s3_endpoint_url", help="S3 endpoint (MinIO, SeaweedFS); default AWS or "
                   "$AWS_ENDPOINT_URL")
    p.add_argument("--s3-access-key", "--s3_access_key", help="default $AWS_ACCESS_KEY_ID or the AWS credentials file")
    p.add_argument("--s3-secret-key", "--s3_secret_key",
                   help="visible to other users in the process list: prefer $AWS_SECRET_ACCESS_KEY or the AWS "
                        "credentials file ($AWS_SHARED_CREDENTIALS_FILE, ~/.aws/credentials)")


def _add_model_source(p: argparse.ArgumentParser) -> None:
    """Where `serve` and `predict` take the model from (default: the registry's champion), and how it is trusted."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model-file", "--model_file", help="an exported model.onnx")
    src.add_argument("--store", help="model store (folder or s3://bucket/prefix); latest version unless --version")
    p.add_argument("--version", type=int, help="version in the model store")
    p.add_argument("--registry-uri", "--registry_uri",
                   help="MLflow tracking URI of the registry (default $MLFLOW_TRACKING_URI, else the workspace's)")
    p.add_argument("--name", default="heimdall-localizer", help="model name in the store / registry")
    p.add_argument("--alias", default="champion", help="registry alias (default champion)")
    _add_s3_options(p)
    p.add_argument("--verify-key", "--verify_key", metavar="FILE",
                   help="refuse models whose manifest is not signed by this ed25519 public key (PEM) or HMAC key "
                        "file (default $HEIMDALL_VERIFY_KEY_FILE)")
    p.add_argument("--model-sha256", "--model_sha256", type=_sha256, metavar="HEX",
                   help="refuse any model whose bytes do not have this sha256")


def _add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train a localization model (default: the built-in scenario, simulated if missing)",
        description="Train LocalizationNet with Lightning and track it with MLflow. Flags override --config; "
                    "the resolved configuration is saved with the run.",
        argument_default=argparse.SUPPRESS,
    )
    flag = p.add_argument
    flag("--config", help="YAML file of options (keys as the long flag names with underscores)")
    flag("--data_dir", "--data-dir", help="store folder with train.h5/val.h5 (default: simulate the default scenario)")
    flag("--epochs", type=int, help="maximum epochs (default 60; early stopping usually ends sooner)")
    flag("--batch_size", "--batch-size", type=int, help="batch size (default 256)")
    flag("--learning_rate", "--learning-rate", "--lr", type=float, help="peak learning rate (default 2e-3)")
    flag("--validation_split", "--validation-split", "--val_split", "--val-split", type=float,
         help="fraction of train used for validation when the store has no val split (default 0.1)")
    flag("--num_workers", "--num-workers", type=int, help="DataLoader worker processes (default 0)")
    flag("--loader_memory_mb", "--loader-memory-mb", type=float,
         help="store data each reading process keeps in memory, MB (default 1024; the rest is read from disk)")
    flag("--accelerator", choices=["cpu", "gpu", "auto"], help="cpu, gpu or auto (default auto)")
    flag("--devices", help="devices per node: a count or 'auto' (default auto)")
    flag("--num_nodes", "--num-nodes", type=int, help="nodes for multi-node DDP (default 1)")
    flag("--strategy", help="Lightning strategy, e.g. ddp (default auto)")
    flag("--seed", type=int, help="seed of data order, initialisation and dropout (default 0)")
    flag("--checkpoint_dir", "--checkpoint-dir", help="run folder for checkpoints (default workspace/runs/<run>)")
    flag("--checkpoint", help="checkpoint to export with --export_only")
    flag("--export_only", "--export-only", action="store_true", help="export --checkpoint to ONNX, no training")
    flag("--resume_training", "--resume-training", action="store_true",
         help="continue the run in --checkpoint_dir from last.ckpt with its saved configuration")
    flag("--experiment_name", "--experiment-name", help="MLflow experiment (default heimdall)")
    flag("--run_name_prefix", "--run-name-prefix", help="prefix of the run name (default heimdall)")
    flag("--tracking_uri", "--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite)")
    flag("--max_time_minutes", "--max-time-minutes", type=float, help="wall-clock budget of the fit (default 12)")
    flag("--n_components", "--n-components", type=int, help="Gaussian mixture components of the head (default 1)")
    flag("--d_model", "--d-model", type=int, help="width of the network (default 96)")
    flag("--n_layers", "--n-layers", type=int, help="attention blocks (default 3)")
    flag("--patience", type=int, help="early-stopping patience in epochs (default 10)")
    flag("--feature_dropout", "--feature-dropout", type=float,
         help="share of training transmissions seen with power only, no spectrum (default 0.2)")
    flag("--threads", type=int, help="torch intra-op threads (default: all cores)")
    flag("--dataset_size", "--dataset-size", type=int, help="transmissions when simulating the default dataset")
    flag("--no_export", "--no-export", dest="export", action="store_false", help="do not export ONNX after training")
    flag("--signing_key", "--signing-key", metavar="FILE",
         help="sign the exported model's manifests with this ed25519 private key (PEM) or HMAC key file "
              "(default $HEIMDALL_SIGNING_KEY_FILE)")


COMMANDS = {
    "simulate": ("heimdall.commands.simulate", "simulate_command"),
    "train": ("heimdall.commands.train", "train_command"),
    "evaluate": ("heimdall.commands.evaluate", "evaluate_command"),
    "export": ("heimdall.commands.export", "export_command"),
    "serve": ("heimdall.commands.serve", "serve_command"),
    "predict": ("heimdall.commands.predict", "predict_command"),
    "import": ("heimdall.commands.import_sigmf", "import_command"),
    "inspect": ("heimdall.commands.inspect", "inspect_command"),
    "scenario": ("heimdall.commands.scenario", "scenario_command"),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module, function = COMMANDS[args.command]
    try:
        return getattr(importlib.import_module(module), function)(args)
    except HeimdallError as exc:
        print(f"heimdall {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"heimdall {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    sys.exit(main())
