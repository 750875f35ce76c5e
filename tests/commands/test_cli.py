import re

import pytest

from heimdall.cli import COMMANDS, main
from heimdall.datasets.store import inspect_store


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "simulate" in out and "scenario" in out
    assert len(COMMANDS) == 10
    for name in COMMANDS:
        assert re.search(rf"^\s+{name}\s+\S", out, re.M), f"{name} is not listed with its help"
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0, name
        usage = capsys.readouterr().out
        assert usage.startswith(f"usage: heimdall {name}"), name
        # dashes only: the underscore spellings are hidden aliases
        assert not re.findall(r"--[a-z0-9]+_[a-z0-9_]*", usage), (name, re.findall(r"--[a-z0-9]+_[a-z0-9_]*", usage))


def test_simulate_writes_a_store_and_prints_a_summary(tmp_path, capsys):
    code = main(["simulate", "-n", "300", "--out", str(tmp_path), "--workers", "1", "--quiet", "--seed", "4"])
    assert code == 0
    out = capsys.readouterr().out
    assert "nw-italy: 300 transmissions" in out and "giaveno" in out
    assert inspect_store(tmp_path / "train.h5").n_samples == 240


def test_simulate_second_scenario_and_iid_control(tmp_path, capsys):
    assert (
        main(
            [
                "simulate",
                "--scenario",
                "randstad-70cm",
                "-n",
                "100",
                "--out",
                str(tmp_path / "r"),
                "--quiet",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    info = inspect_store(tmp_path / "r" / "test.h5")
    assert info.n_receivers == 10
    assert (
        main(["simulate", "--shadowing", "iid", "-n", "100", "--out", str(tmp_path / "i"), "--quiet", "--workers", "1"])
        == 0
    )
    assert "nw-italy-iid" in capsys.readouterr().out


def test_bad_scenario_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfrequency_hz: 145\nreceivers: []\n")
    assert main(["simulate", "--scenario", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "frequency_hz" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_scenario_commands(tmp_path, capsys):
    assert main(["scenario", "list"]) == 0
    assert "randstad-70cm" in capsys.readouterr().out
    assert main(["scenario", "show", "nw-italy"]) == 0
    shown = capsys.readouterr().out
    (tmp_path / "copy.yaml").write_text(shown)
    assert main(["scenario", "validate", str(tmp_path / "copy.yaml")]) == 0
    assert "valid" in capsys.readouterr().out


def test_bad_flags_exit_with_usage(capsys):
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--shard", "3/2"])
    assert info.value.code == 2
    assert "--shard" in capsys.readouterr().err


def test_help_imports_no_heavy_module():
    import subprocess
    import sys

    code = (
        "import sys, contextlib, io\n"
        "from heimdall.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        "print(sorted(m for m in ('numpy', 'h5py', 'scipy', 'torch', 'lightning') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_inspect_prints_metadata_literally(tmp_path, capsys):
    """Metadata is text from whoever made the file: Rich markup in it is printed, not interpreted."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    for key, value in {
        "format": "heimdall-onnx/1",
        "source_revision": "[/]",
        "heimdall_version": "[bold]red[/bold]",
        "receivers": "[link=http://x]not json",
        "[red]key": "v",
    }.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    path = tmp_path / "[b]model.onnx"
    onnx.save(model, str(path))
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    for literal in ("[/]", "[bold]red[/bold]", "[link=http://x]not json", "[red]key", "[b]model.onnx"):
        assert literal in out, literal


def test_an_unexpected_error_is_one_line_and_debug_prints_its_traceback(tmp_path, capsys, monkeypatch):
    """An environment problem (--out under a regular file) is no Heimdall error: one line saying how to see the
    traceback; --debug (before or after the command) or HEIMDALL_DEBUG=1 prints the traceback first."""
    (tmp_path / "file").write_text("")
    command = ["simulate", "-n", "10", "--out", str(tmp_path / "file" / "sub"), "--workers", "1", "--quiet"]
    monkeypatch.delenv("HEIMDALL_DEBUG", raising=False)
    assert main(command) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[0].startswith("heimdall simulate: unexpected error: NotADirectoryError")
    assert "--debug" in err and "HEIMDALL_DEBUG=1" in err
    for argv, variable in ((["--debug", *command], None), ([*command, "--debug"], None), (command, "1")):
        if variable:
            monkeypatch.setenv("HEIMDALL_DEBUG", variable)
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("Traceback (most recent call last):"), (argv, err)
        assert "in generate_dataset" in err and err.rstrip().endswith(f"Not a directory: '{tmp_path / 'file' / 'sub'}'")
        assert "HEIMDALL_DEBUG=1" not in err


def test_underscore_spellings_and_older_names_are_hidden_aliases():
    from heimdall.cli import build_parser

    parser = build_parser()
    dashed = parser.parse_args(["train", "--data-dir", "d", "--checkpoint-dir", "c", "--validation-split", "0.1"])
    for argv in (
        ["train", "--data_dir", "d", "--checkpoint_dir", "c", "--validation_split", "0.1"],
        ["train", "--data-dir", "d", "--checkpoint-dir", "c", "--val-split", "0.1"],
    ):
        assert parser.parse_args(argv) == dashed, argv
    evaluate = parser.parse_args(["evaluate", "--data-dir", "d"])
    assert (
        parser.parse_args(["evaluate", "--data", "d"]) == parser.parse_args(["evaluate", "--data_dir", "d"]) == evaluate
    )
