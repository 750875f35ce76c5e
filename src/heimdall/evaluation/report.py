"""The evaluation report: one self-contained HTML file (report.html) a person can read and share.

It renders whatever metrics.json holds — every estimator (in the estimator table's order, with what each one is and
why any other was not evaluated), every scalar metric, every receivers-heard class — rather than a fixed list, and
inlines the evaluation's PNG plots as base64, so the file needs nothing beside it. Distances are in m or km,
whichever fits (heimdall.units.format_distance).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from heimdall.atomic import atomic_write_text
from heimdall.evaluation.estimators import ESTIMATORS, ordered
from heimdall.units import format_distance

REPORT_NAME = "report.html"
FIGURES = {  # known plots first, with what they show; any other PNG in the folder follows under its name
    "error_cdf.png": "Error CDF of every estimator",
    "calibration.png": "Calibration: observed coverage of the uncertainty regions against their nominal probability",
    "error_map.png": "Median error over the area: where the model is good and where it is not",
    "map.png": "A sample of test transmissions: truth, estimate and 95 % region",
}
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; max-width: 1100px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
td, th { padding: 0.2em 0.6em; border-bottom: 1px solid #eee; text-align: right; }
td:first-child, th:first-child { text-align: left; }
th { background: #f3f5f7; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
code { overflow-wrap: anywhere; }
"""


def write_report(out: Path, metrics: dict, commit: str | None = None) -> Path:
    """Write out/report.html from `metrics` (metrics.json's content) and the PNG plots in `out`; returns its path.

    commit: the source revision of the code that evaluated (shown with the provenance).
    """
    provenance = {**metrics.get("provenance", {}), "commit": commit}
    found: dict[str, dict] = metrics.get("estimators", {})
    estimators = {name: found[name] for name in ordered(found)}
    title = f"Heimdall evaluation: {provenance.get('scenario') or 'test set'}"
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{_e(title)}</h1>",
        f"<p>{_e(metrics.get('n_test', '?'))} test transmissions, "
        f"{_percent(metrics.get('inside_hull_fraction'))} inside the receivers' convex hull.</p>",
        "<h2>Estimators</h2>",
        _table(["estimator", *_scalar_keys(estimators)], _scalar_rows(estimators)),
        "<p>Coverage is the fraction of true positions inside the region of that probability.</p>",
        _about(estimators, provenance.get("not_evaluated") or {}),
        "<h2>Inside and outside the receivers' hull</h2>",
        _table(*_split_rows(estimators, ("inside_hull", "outside_hull"))),
        "<h2>By number of receivers that heard the transmission</h2>",
        _table(*_split_rows(estimators, _classes(estimators))),
        "<p>Each cell: median error (transmissions).</p>",
        "<h2>Figures</h2>",
        *_figures(out),
        "<h2>Provenance</h2>",
        _table(["", ""], [[k, _value(k, v)] for k, v in _flatten(provenance)], show_header=False),
        "</body></html>",
    ]
    atomic_write_text(out / REPORT_NAME, "\n".join(parts))
    return out / REPORT_NAME


def _e(value: Any) -> str:
    return html.escape(str(value))


def _percent(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else "—"


def _value(key: str, value: Any) -> str:
    """A metric for a person: distances in m or km, coverages and fractions as percent."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—" if value is None else str(value) if not isinstance(value, list | dict) else json.dumps(value)
    if key.endswith("_m"):
        return format_distance(value)
    if key.startswith("coverage") or key.endswith("_fraction"):
        return _percent(value)
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        out.extend(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", v)])
    return out


def _scalar_keys(estimators: dict[str, dict]) -> list[str]:
    """Every scalar metric any estimator has, in order of first appearance."""
    keys: dict[str, None] = {}
    for m in estimators.values():
        keys.update({k: None for k, v in m.items() if not isinstance(v, dict | list)})
    return list(keys)


def _scalar_rows(estimators: dict[str, dict]) -> list[list[str]]:
    keys = _scalar_keys(estimators)
    return [[name, *(_value(k, m.get(k)) for k in keys)] for name, m in estimators.items()]


def _classes(estimators: dict[str, dict]) -> list[str]:
    """The receivers-heard classes any estimator has ('1', '2', …, '4+'), in numeric order."""
    found = {c for m in estimators.values() for c in m.get("by_receivers_heard", {})}
    return [f"by_receivers_heard.{c}" for c in sorted(found, key=lambda c: (int(c.rstrip("+")), c))]


def _split_rows(estimators: dict[str, dict], splits: Any) -> tuple[list[str], list[list[str]]]:
    """Header and rows of median error (count) per estimator for the given nested splits (dotted paths)."""
    splits = list(splits)
    rows = []
    for name, m in estimators.items():
        cells = [name]
        for path in splits:
            part: Any = m
            for key in path.split("."):
                part = part.get(key, {}) if isinstance(part, dict) else {}
            median = part.get("median_error_m")
            cells.append("—" if median is None else f"{format_distance(median)} ({part.get('n', '?')})")
        rows.append(cells)
    return ["estimator", *(p.rpartition(".")[2].replace("_", " ") for p in splits)], rows


def _about(estimators: dict[str, dict], not_evaluated: dict[str, str]) -> str:
    """What each scored estimator is (the estimator table's label and description), and why any other is not."""
    items = [
        f"<li><b>{_e(name)}</b> ({_e(ESTIMATORS[name].label)}): {_e(ESTIMATORS[name].doc)}</li>"
        for name in estimators
        if name in ESTIMATORS
    ]
    items += [f"<li><b>{_e(name)}</b>: not evaluated ({_e(why)})</li>" for name, why in not_evaluated.items()]
    return f"<ul>{''.join(items)}</ul>" if items else ""


def _table(columns: list[str], rows: list[list[str]], show_header: bool = True) -> str:
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in columns) + "</tr>" if show_header else ""
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _figures(out: Path) -> list[str]:
    """The folder's PNG plots as inline <figure>s: the known ones first, then any other."""
    pngs = {p.name: p for p in out.glob("*.png")}
    names = [n for n in FIGURES if n in pngs] + sorted(n for n in pngs if n not in FIGURES)
    return [
        f"<figure><img alt='{_e(name)}' src='data:image/png;base64,"
        f"{base64.b64encode(pngs[name].read_bytes()).decode()}'><figcaption>{_e(FIGURES.get(name, name))}"
        "</figcaption></figure>"
        for name in names
    ] or ["<p>No plots in this evaluation.</p>"]
