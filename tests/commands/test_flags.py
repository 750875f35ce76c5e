"""The command line generated from the configuration dataclasses: every field has a flag and every flag is a field
or one of the command's own options; the documented command lines give the configurations they always gave; old
spellings are aliases; --version and each command's --help."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any, Literal

import pytest

import heimdall
from heimdall.cli import COMMANDS, build_parser, main
from heimdall.commands.flags import add_fields, from_args
from heimdall.datasets.spec import DatasetSpec, ImportOptions
from heimdall.option_field import MEBIBYTE, option
from heimdall.serve.settings import ServeSettings
from heimdall.train.config import TrainConfig, from_mapping

CONFIGS = {"simulate": DatasetSpec, "import": ImportOptions, "train": TrainConfig, "serve": ServeSettings}
NO_FLAG = {"mlflow_run_id"}  # written by the training run itself
S3 = {"s3_endpoint_url", "s3_access_key", "s3_secret_key"}
MODEL_SOURCE = {"model_file", "store", "version", "tracking_uri", "name", "alias", "verify_key", "model_sha256", *S3}
# what each command does with its configuration: its own options, not fields of a configuration
COMMAND_OPTIONS = {
    "simulate": {"scenario", "like", "out", "format", "datatype", "workers", "shadowing", "quiet"},
    "train": {"config", "checkpoint", "export_only", "resume_training", "store", "eval_data", "json", "log_level", *S3},
    "evaluate": {
        "model",
        "data_dir",
        "out",
        "grid_spacing_m",
        "map_spacing_m",
        "max_samples",
        "tracking_uri",
        "no_mlflow",
        "quiet",
    },
    "export": {
        "checkpoint",
        "out",
        "store",
        "no_store",
        "name",
        "signing_key",
        "eval_data",
        "no_register",
        "tracking_uri",
        *S3,
    },
    "serve": MODEL_SOURCE,
    "predict": {
        "data",
        "split",
        "out",
        "format",
        "match_tolerance_m",
        "skip_invalid",
        "quiet",
        "threads",
        *MODEL_SOURCE,
    },
    "import": {"input", "format", "out", "scenario", "quiet"},
    "map": {
        "action",
        "data_store",
        "model",
        "out",
        "labels",
        "spacing_m",
        "signing_key",
        "store",
        "register",
        "tracking_uri",
        "version",
        "alias",
        "verify_key",
        "eval_data",
        "quiet",
        *S3,
    },
    "inspect": {"model"},
    "scenario": {"action", "name"},
}
TILES = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
# (command line from README.md / docs/*.md, the configuration it gives)
DOCUMENTED = [
    ("simulate --scenario my.yaml -n 20000 --out data/mine", DatasetSpec(n_transmissions=20000)),
    ("simulate --shard 3/16 --out data/big -n 1600000", DatasetSpec(n_transmissions=1_600_000, shard=(3, 16))),
    ("simulate --split-mode spatial", DatasetSpec(split_mode="spatial")),
    ("simulate --shadowing iid", DatasetSpec()),
    ("simulate --format sigmf -n 500 --out sigmf/sim", DatasetSpec(n_transmissions=500)),
    ("simulate --like data/real -n 100000 --out data/real-twin", DatasetSpec(n_transmissions=100_000)),
    ("simulate -n 26000 --iq-samples 0 --seed 5", DatasetSpec(n_transmissions=26000, iq_per_split=0, seed=5)),
    (
        "simulate --splits 0.7,0.2,0.1 --spatial-block-m 5000",
        DatasetSpec(fractions=(0.7, 0.2, 0.1), spatial_block_m=5e3),
    ),
    ("import recordings/ --out data/real --scenario my.yaml", ImportOptions()),
    (
        "import hunt --out workspace/data/hunt --skip-invalid --overwrite --splits 1,0,0 --match-tolerance-m 50 "
        "--new-receiver-height-m 4 --iq-samples 8 --seed 2",
        ImportOptions(
            skip_invalid=True,
            overwrite=True,
            fractions=(1.0, 0.0, 0.0),
            match_tolerance_m=50.0,
            new_receiver_height_m=4.0,
            iq_per_split=8,
            seed=2,
        ),
    ),
    ("train --data-dir data/mine --epochs 80", TrainConfig(data_dir="data/mine", epochs=80)),
    (
        "train --data-dir data/mine --epochs 80 --batch-size 512 --learning-rate 1e-3",
        TrainConfig(data_dir="data/mine", epochs=80, batch_size=512, learning_rate=1e-3),
    ),
    (
        "train --epochs 50 --batch_size 32 --learning_rate 1e-3",
        TrainConfig(epochs=50, batch_size=32, learning_rate=1e-3),
    ),
    ("train --accelerator gpu --devices 2", TrainConfig(accelerator="gpu", devices="2")),
    (
        "train --init-from RUN/best.ckpt --data-dir STORE --keep-normalisation",
        TrainConfig(init_from="RUN/best.ckpt", data_dir="STORE", keep_normalisation=True),
    ),
    (
        "train --accelerator gpu --devices 4 --num-nodes 2 --strategy ddp --data-dir /shared/store",
        TrainConfig(accelerator="gpu", devices="4", num_nodes=2, strategy="ddp", data_dir="/shared/store"),
    ),
    (
        "train --data-dir data/real-twin --checkpoint-dir runs/twin --num-workers 2 --loader-memory-mb 512",
        TrainConfig(data_dir="data/real-twin", checkpoint_dir="runs/twin", num_workers=2, loader_memory_mb=512.0),
    ),
    ("train --config my-train.yaml --seed 3", TrainConfig(seed=3)),
    ("train --data-dir data/mine --epochs 2 --json --log-level debug", TrainConfig(data_dir="data/mine", epochs=2)),
    ("train --no-export --threads 2", TrainConfig(export=False, threads=2)),
    ("train --localizer network --map-spacing-m 250", TrainConfig(localizer="network", map_spacing_m=250.0)),
    (
        "train --max-time-minutes 30 --patience 5 --val-split 0.2",
        TrainConfig(max_time_minutes=30.0, patience=5, validation_split=0.2),
    ),
    (
        "train --d-model 64 --n-heads 2 --n-layers 2 --n-components 3 --feature-dropout 0.1",
        TrainConfig(d_model=64, n_heads=2, n_layers=2, n_components=3, feature_dropout=0.1),
    ),
    (
        "train --experiment-name e --run-name-prefix p --tracking-uri sqlite:///m.db --signing-key k.pem "
        "--dataset-size 5000",
        TrainConfig(
            experiment_name="e",
            run_name_prefix="p",
            tracking_uri="sqlite:///m.db",
            signing_key="k.pem",
            dataset_size=5000,
        ),
    ),
    (
        "train --receiver-dropout 0.2 --dropout 0.1 --weight-decay 0 --scenario nw-italy-small --run-name r",
        TrainConfig(receiver_dropout=0.2, dropout=0.1, weight_decay=0.0, scenario="nw-italy-small", run_name="r"),
    ),
    ("serve --verify-key verify.pem", ServeSettings()),
    ("serve --tracking-uri http://mlflow:5000 --alias champion", ServeSettings()),
    ("serve --store s3://models/heimdall --version 3", ServeSettings()),
    (
        "serve --host 0.0.0.0 --port 9000 --threads 1 --max-batch 1 --max-wait-ms 2 --max-inflight 100 "
        "--max-requests 8 --max-body-mb 2 --match-tolerance-m 50 --cache-size 0",
        ServeSettings(
            host="0.0.0.0",
            port=9000,
            max_batch=1,
            max_wait_ms=2.0,
            max_inflight=100,
            max_requests=8,
            max_body_bytes=2 * MEBIBYTE,
            match_tolerance_m=50.0,
            cache_size=0,
        ),
    ),
    (
        f"serve --model-file model-map.onnx --tile-url {TILES} --live-view --events-size 10 --max-event-streams 3 "
        "--max-event-streams-per-client 1 --event-idle-s 60 --map-threads 1",
        ServeSettings(
            tile_url=TILES,
            live_view=True,
            events_size=10,
            max_event_streams=3,
            max_event_streams_per_client=1,
            event_idle_s=60.0,
            map_threads=1,
        ),
    ),
    (
        "serve --limit-concurrency 10 --keep-alive-s 2 --header-timeout-s 3 --body-timeout-s 4",
        ServeSettings(limit_concurrency=10, keep_alive_s=2, header_timeout_s=3.0, body_timeout_s=4.0),
    ),
]
# (older spelling, the spelling documented now): the same namespace
ALIASES = [
    ("export --checkpoint c --data-dir STORE", "export --checkpoint c --eval-data STORE"),
    ("export --checkpoint c --data_dir STORE", "export --checkpoint c --eval-data STORE"),
    ("export --checkpoint c --eval_data STORE", "export --checkpoint c --eval-data STORE"),
    ("evaluate --data STORE", "evaluate --data-dir STORE"),
    ("train --lr 0.01", "train --learning-rate 0.01"),
    ("train --val_split 0.2", "train --validation-split 0.2"),
    ("train --val-split 0.2", "train --validation-split 0.2"),
    ("train --no_export", "train --no-export"),
    ("train --export_only --checkpoint c", "train --export-only --checkpoint c"),
    ("train --checkpoint last.ckpt --resume_training", "train --checkpoint last.ckpt --resume-training"),
    ("serve --registry-uri http://m", "serve --tracking-uri http://m"),
    ("serve --registry_uri http://m", "serve --tracking-uri http://m"),
    ("serve --model_file m.onnx", "serve --model-file m.onnx"),
    ("serve --live_view --max_body_mb 2", "serve --live-view --max-body-mb 2"),
    (
        "predict d --registry-uri http://m --model_sha256 " + "a" * 64,
        "predict d --tracking-uri http://m --model-sha256 " + "a" * 64,
    ),
    ("import d --out o --skip_invalid --no_skip_invalid", "import d --out o --no-skip-invalid"),
]


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Command name → its parser."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def dests(parser: argparse.ArgumentParser) -> set[str]:
    """What the command's arguments set (not help and --debug)."""
    return {a.dest for a in parser._actions if a.dest not in ("help", "debug")}


def config_of(argv: list[str]) -> Any:
    """The configuration a command line gives, as its command builds it."""
    args = build_parser().parse_args(argv)
    cls = CONFIGS[argv[0]]
    if cls is TrainConfig:  # flags given override defaults (and --config, not read here)
        return from_mapping(
            {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}, "test"
        )
    return from_args(cls, args)


def test_every_config_field_has_a_flag_and_every_flag_is_a_field_or_an_option_of_its_command():
    commands = subparsers(build_parser())
    assert set(commands) == set(COMMANDS) == set(COMMAND_OPTIONS)
    for name, parser in commands.items():
        fields = {f.name for f in dataclasses.fields(CONFIGS[name])} - NO_FLAG if name in CONFIGS else set()
        assert fields <= dests(parser), (name, fields - dests(parser))
        assert dests(parser) == fields | COMMAND_OPTIONS[name], (name, dests(parser) ^ (fields | COMMAND_OPTIONS[name]))


@pytest.mark.parametrize(("line", "expected"), DOCUMENTED, ids=[line for line, _ in DOCUMENTED])
def test_documented_command_lines_give_their_configuration(line, expected):
    assert config_of(line.split()) == expected


@pytest.mark.parametrize(("old", "new"), ALIASES, ids=[old for old, _ in ALIASES])
def test_older_spellings_are_aliases(old, new):
    parser = build_parser()
    assert parser.parse_args(old.split()) == parser.parse_args(new.split())


def test_every_long_flag_has_its_underscore_spelling_hidden():
    for name, parser in subparsers(build_parser()).items():
        shown = parser.format_help()
        for action in parser._actions:
            for flag in action.option_strings:
                underscored = "--" + flag[2:].replace("-", "_")
                if flag.startswith("--") and underscored != flag and action.help != argparse.SUPPRESS:
                    assert underscored in parser._option_string_actions, (name, flag)
                    assert underscored not in shown, (name, underscored)


def test_old_data_dir_of_export_is_the_eval_data_and_not_shown():
    parser = subparsers(build_parser())["export"]
    assert build_parser().parse_args("export --checkpoint c --data-dir S".split()).eval_data == "S"
    assert "--data-dir" not in parser.format_help()


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"heimdall {heimdall.__version__}\n"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: heimdall {command}")


def test_help_shows_the_dataclass_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"--port PORT port (default {ServeSettings.port})" in out
    assert "--max-body-mb MAX_BODY_MB request body limit (MB) (default 16)" in out


@dataclasses.dataclass
class Toy:
    """Each kind of field the generator turns into a flag."""

    count: int = option(1, "a count")
    ratio: float | None = option(None, "a ratio")
    mode: Literal["a", "b"] = option("a", "a mode")
    on: bool = option(True, "a switch")
    pair: tuple[float, float] = option((0.0, 1.0), "two numbers")
    many: tuple[int, ...] = option((1,), "numbers", flag="--values", aliases=("--vals",))
    quiet_field: int = 0  # no help: no flag


def toy(argv: list[str]) -> Toy:
    parser = argparse.ArgumentParser()
    add_fields(parser, Toy)
    return from_args(Toy, parser.parse_args(argv))


def test_the_generator_maps_each_type_to_its_flag():
    assert toy([]) == Toy()
    got = toy("--count 3 --ratio 0.5 --mode b --no-on --pair 2 3 --values 4 5 6".split())
    assert got == Toy(count=3, ratio=0.5, mode="b", on=False, pair=(2.0, 3.0), many=(4, 5, 6))
    assert toy("--vals 7 --no_on".split()) == Toy(many=(7,), on=False)
    with pytest.raises(SystemExit):
        toy(["--mode", "c"])
    with pytest.raises(SystemExit):
        toy(["--quiet-field", "1"])


def documented_uses() -> list[tuple[str, str, str]]:
    """(file:line, command, flag) of each flag written after `heimdall COMMAND` on a line of README.md or docs/."""
    root = Path(__file__).resolve().parents[2]
    pattern = re.compile(r"heimdall (" + "|".join(COMMANDS) + r")\b([^`|#]*)")
    uses = []
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            for command, rest in pattern.findall(line):
                uses += [
                    (f"{doc.name}:{number}", command, flag) for flag in re.findall(r"(?<!\S)-{1,2}[a-z][\w-]*", rest)
                ]
    return uses


def test_every_flag_the_docs_write_after_a_command_is_one_of_its_flags():
    commands = subparsers(build_parser())
    uses = documented_uses()
    assert len(uses) > 50
    unknown = [use for use in uses if use[2] not in commands[use[1]]._option_string_actions]
    assert not unknown
