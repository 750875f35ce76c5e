"""`heimdall train`'s flags: TrainConfig's (only those given reach the namespace: they override --config) and the
command's own modes and destinations (heimdall.commands.train.COMMAND_ONLY, not saved with the run)."""

from __future__ import annotations

import argparse

from heimdall.commands.flags import add_fields, add_flag
from heimdall.commands.logs import LEVELS
from heimdall.commands.options import add_s3_flags
from heimdall.train.config import TrainConfig


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `train` to the subcommands `sub`."""
    p = sub.add_parser(
        "train",
        help="train a localization model (default: the built-in scenario, simulated if missing)",
        description="Train LocalizationNet with Lightning and track it with MLflow, then export, store and register "
        "the best checkpoint. Flags override --config; the resolved configuration is saved with the run.",
        argument_default=argparse.SUPPRESS,
    )
    add_flag(p, "--config", help="YAML file of options (keys as the long flag names with underscores)")
    add_fields(p, TrainConfig, suppress_defaults=True)
    add_flag(
        p,
        "--checkpoint",
        help="with --export-only: the checkpoint to publish; with --resume-training: the run's last.ckpt",
    )
    add_flag(
        p,
        "--export-only",
        action="store_true",
        help="publish --checkpoint (ONNX → model store → MLflow registry) without training",
    )
    add_flag(
        p,
        "--resume-training",
        action="store_true",
        help="continue the run of --checkpoint RUN/last.ckpt (or --checkpoint-dir RUN) with its saved configuration "
        "and a fresh --max-time-minutes budget; options that cannot change (batch size, learning rate, "
        "architecture) are refused",
    )
    add_flag(
        p,
        "--store",
        help="model store the model is published to: a folder or s3://bucket/prefix (default: workspace/models)",
    )
    add_s3_flags(p)
    add_flag(
        p,
        "--eval-data",
        help="store folder (its test split) or test .h5 the registry's champion rule judges on (default: the "
        "training store's test split if it has one, else the model is registered as a challenger)",
    )
    add_flag(p, "--json", action="store_true", help="print one JSON summary on stdout (human output goes to stderr)")
    add_flag(
        p,
        "--log-level",
        choices=LEVELS,
        help="messages shown on stderr (default info); the run folder's train.log keeps info and above",
    )
    return p
