"""The `heimdall` command. Heavy modules are imported inside each command so `--help` is instant.

`main(argv)` runs in-process and returns an exit code (tests call it directly); `run()` is the console
entry point.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from heimdall.errors import HeimdallError


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

    p = sub.add_parser("simulate", help="simulate a scenario into a training store (train/val/test)",
                       description="Simulate transmissions of a scenario and write train/val/test store files.")
    p.add_argument("--scenario", default="nw-italy", help="built-in scenario name or YAML file (default: nw-italy)")
    p.add_argument("--out", help="output folder (default: $HEIMDALL_WORKSPACE/data/<scenario>)")
    p.add_argument("-n", "--n-transmissions", "--n_transmissions", type=_positive_int, default=100_000,
                   help="transmissions over all splits (default: 100000)")
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

    p = sub.add_parser("scenario", help="list, show or validate scenarios",
                       description="List built-in scenarios, print one, or validate a scenario file.")
    p.add_argument("action", choices=["list", "show", "validate"])
    p.add_argument("name", nargs="?", default="nw-italy", help="built-in name or YAML file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "simulate":
            from heimdall.commands.simulate import simulate_command

            return simulate_command(args)
        if args.command == "scenario":
            from heimdall.commands.scenario import scenario_command

            return scenario_command(args)
    except HeimdallError as exc:
        print(f"heimdall {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"heimdall {args.command}: interrupted", file=sys.stderr)
        return 130
    raise AssertionError(f"unhandled command {args.command}")


def run() -> None:
    sys.exit(main())
