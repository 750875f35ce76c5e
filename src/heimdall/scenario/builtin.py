"""The scenarios shipped with Heimdall (YAML files in this package's builtin/ folder), and loading a scenario
by built-in name or file path."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from heimdall.errors import ScenarioError
from heimdall.plain_yaml import read_bounded_text
from heimdall.scenario.domain import MAX_SCENARIO_CHARS, Scenario
from heimdall.scenario.schema import scenario_from_text

_FOLDER = "builtin"


def builtin_names() -> list[str]:
    """Names of the scenarios shipped with Heimdall."""
    folder = resources.files("heimdall.scenario") / _FOLDER
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A built-in scenario by name (e.g. DEFAULT_SCENARIO) or a YAML file by path."""
    name = str(name_or_path)
    p = Path(name)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ScenarioError(f"{p}: scenario file not found")
        return scenario_from_text(read_bounded_text(p, ScenarioError, MAX_SCENARIO_CHARS), str(p))
    if name in builtin_names():
        res = resources.files("heimdall.scenario") / _FOLDER / f"{name}.yaml"
        return scenario_from_text(res.read_text(encoding="utf-8"), f"built-in scenario {name!r}")
    raise ScenarioError(
        f"scenario {name!r}: neither a file nor a built-in scenario (built-ins: {', '.join(builtin_names())})"
    )
