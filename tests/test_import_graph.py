"""The pipeline's stages import only the stages before them, and no module imports itself back through others.

Every import counts: module level, inside functions, under TYPE_CHECKING. Order (docs/ARCHITECTURE.md):
core (the top-level modules) → scenario → sim → datasets → radiomap → train → evaluation → release → serve →
commands (with cli and __main__).
"""

from __future__ import annotations

import ast
from pathlib import Path

import heimdall

STAGES = ("core", "scenario", "sim", "datasets", "radiomap", "train", "evaluation", "release", "serve", "commands")
LAST = ("cli", "__main__")  # top-level modules of the last stage


def modules(root: Path) -> dict[str, Path]:
    """Dotted name → file of every module under the package folder `root`."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that module `name` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    root = name.split(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])]
                )
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known and target.startswith(root):  # `import a.b.c` of an attribute
                target = target.rpartition(".")[0]
            if target in known and target != name:
                found.add(target)
    return found


def stage(name: str) -> int:
    """Position of module `name` in STAGES."""
    parts = name.split(".")
    if len(parts) == 1:
        return 0
    if parts[1] in STAGES:
        return STAGES.index(parts[1])
    return len(STAGES) - 1 if parts[1] in LAST else 0


def violations(root: Path) -> tuple[list[str], list[list[str]]]:
    """(imports of a later stage, import cycles) among the modules of the package folder `root`."""
    mods = modules(root)
    graph = {name: imports(name, path, set(mods)) for name, path in mods.items()}
    upward = [
        f"{a} ({STAGES[stage(a)]}) imports {b} ({STAGES[stage(b)]})"
        for a, targets in sorted(graph.items())
        for b in sorted(targets)
        if stage(b) > stage(a)
    ]
    cycles, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append([*trail[trail.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return upward, cycles


def test_stages_import_only_earlier_stages_and_nothing_cycles():
    upward, cycles = violations(Path(heimdall.__file__).parent)
    assert not upward, "imports of a later stage:\n" + "\n".join(upward)
    assert not cycles, "import cycles:\n" + "\n".join(" → ".join(c) for c in cycles)


def test_the_check_sees_function_level_upward_imports_and_cycles(tmp_path):
    pkg = tmp_path / "heimdall"
    for folder in ("sim", "train", "serve"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "geo.py").write_text("import numpy\n")
    (pkg / "sim" / "physics.py").write_text(
        "from heimdall.geo import x\n\n\ndef f():\n    from heimdall.train import run\n"
    )
    (pkg / "train" / "run.py").write_text("from heimdall.sim import physics\nfrom . import task\n")
    (pkg / "train" / "task.py").write_text("def g():\n    import heimdall.train.run\n")
    (pkg / "serve" / "app.py").write_text("from heimdall.train.run import main\n")
    upward, cycles = violations(pkg)
    assert upward == ["heimdall.sim.physics (sim) imports heimdall.train.run (train)"]
    assert sorted(sorted(c[:-1]) for c in cycles) == [
        ["heimdall.sim.physics", "heimdall.train.run"],
        ["heimdall.train.run", "heimdall.train.task"],
    ]
