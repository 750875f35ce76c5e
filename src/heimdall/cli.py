"""The `heimdall` command: the top-level parser, its global flags and the dispatch to each command.

Each command's flags are in heimdall.commands.parsers.<command> (generated from the configuration dataclasses where
the command has one: heimdall.commands.flags); its work in heimdall.commands.<command>, imported only when it runs,
so that `--help` and `--version` are quick. `main(argv)` runs in-process and returns an exit code (tests call it
directly); `run()` is the console entry point.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from heimdall import __version__
from heimdall.commands.logs import configure_logging
from heimdall.commands.parsers import (
    evaluate,
    export,
    importing,
    inspect,
    predict,
    scenario,
    serve,
    simulate,
    train,
)
from heimdall.commands.parsers import (
    map as map_parser,
)
from heimdall.errors import HeimdallError

DEBUG_VARIABLE = "HEIMDALL_DEBUG"
# command → its parser module (heimdall.commands.parsers) and the function that runs it (heimdall.commands)
COMMANDS = {
    "simulate": (simulate, "simulate_command"),
    "train": (train, "train_command"),
    "evaluate": (evaluate, "evaluate_command"),
    "export": (export, "export_command"),
    "serve": (serve, "serve_command"),
    "predict": (predict, "predict_command"),
    "import": (importing, "import_command"),
    "map": (map_parser, "map_command"),
    "inspect": (inspect, "inspect_command"),
    "scenario": (scenario, "scenario_command"),
}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command and flag."""
    parser = argparse.ArgumentParser(
        prog="heimdall",
        description="Locate VHF/UHF transmitters from multi-receiver recordings: simulate, train, evaluate, serve.",
    )
    parser.add_argument("--version", action="version", version=f"heimdall {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands = [module.add_parser(sub) for module, _ in COMMANDS.values()]
    text = f"print the traceback of an unexpected error, to report a bug (or set {DEBUG_VARIABLE}=1)"
    parser.add_argument("--debug", action="store_true", help=text)
    for command in commands:  # --debug after the command too (leaving the value alone when it is not given there)
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=text)
    return parser


def command_function(name: str) -> Callable[[argparse.Namespace], int]:
    """The function that runs command `name`: in the heimdall.commands module named like its parser module (imported
    now)."""
    module, function = COMMANDS[name]
    return getattr(importlib.import_module(module.__name__.replace(".parsers.", ".")), function)


def debugging(args: argparse.Namespace) -> bool:
    """Whether errors print their traceback: --debug, or $HEIMDALL_DEBUG set to 1/true/yes/on."""
    return args.debug or os.environ.get(DEBUG_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default sys.argv[1:]) in-process; returns the exit code (errors printed as one
    line; with --debug or $HEIMDALL_DEBUG=1 after their traceback)."""
    args = build_parser().parse_args(argv)
    try:
        command = command_function(args.command)
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
