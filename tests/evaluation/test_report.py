"""The evaluation report (report.html): generic over metrics.json, self-contained, written and logged by
`heimdall evaluate`."""

import base64
import re
from pathlib import Path

import numpy as np
import pytest

from browser import SCREENSHOT_DIR, chromium_context
from heimdall.cli import main
from heimdall.evaluation.report import write_report


def _png(path: Path) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    fig.savefig(path, format="png")
    plt.close(fig)
    return path.read_bytes()


def test_report_renders_whatever_estimators_and_keys_metrics_hold(tmp_path):
    cdf = _png(tmp_path / "error_cdf.png")
    extra = _png(tmp_path / "coverage_by_class.png")

    def split(median_m, n):
        return {"n": n, "median_error_m": median_m}

    metrics = {
        "n_test": 40,
        "inside_hull_fraction": 0.625,
        "provenance": {"model": "runs/x/best.ckpt", "scenario": "nw-italy", "test_store": "data/test.h5"},
        "estimators": {
            "model": {
                "n": 40,
                "median_error_m": 4200.0,
                "coverage_1sigma": 0.41,
                "inside_hull": split(3000.0, 25),
                "outside_hull": split(9000.0, 15),
                "by_receivers_heard": {"3": split(8000.0, 10), "4+": split(3500.0, 30)},
            },
            "hybrid": {
                "n": 40,
                "median_error_m": 3900.0,
                "coverage_hpd95": 0.951,
                "answered": 0.975,
                "by_receivers_heard": {"1": split(30000.0, 2), "10": split(1000.0, 1)},
            },
        },
    }
    path = write_report(tmp_path, metrics, commit="0123abc<script>")
    page = path.read_text()
    assert path.name == "report.html"
    rows = re.findall(r"<tr>(.*?)</tr>", page)
    hybrid = next(r for r in rows if r.startswith("<td>hybrid</td>") and "<td>3900 m</td>" in r)
    assert "<td>95.1%</td><td>0.975</td>" in hybrid  # its own keys, in their columns
    header = next(r for r in rows if "<th>estimator</th><th>n</th>" in r)
    assert header.index("coverage_1sigma") < header.index("coverage_hpd95") < header.index("answered")
    classes = next(r for r in rows if "<th>4+</th>" in r)
    assert (
        classes.index("<th>1</th>")
        < classes.index("<th>3</th>")
        < classes.index("<th>4+</th>")
        < classes.index("<th>10</th>")
    )
    assert "<td>3500 m (30)</td>" in page and "<td>3000 m (25)</td>" in page
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert [base64.b64decode(i) for i in images] == [cdf, extra]  # known plots first, then the others
    assert "0123abc&lt;script&gt;" in page and "<script>" not in page
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", page)  # nothing outside the file


@pytest.mark.system
def test_evaluate_writes_the_report_and_logs_it_to_mlflow(tiny_run, tiny_store, tmp_path):
    from mlflow.tracking import MlflowClient

    ws, uri = tiny_run
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(ws / "run" / "best.ckpt"), "--data-dir", str(tiny_store), "--out", str(out)]
    assert main([*args, "--grid-spacing-m", "8000", "--tracking-uri", uri]) == 0
    page = (out / "report.html").read_text()
    assert len(re.findall(r"src='data:image/png;base64,", page)) == 4
    for name in ("model", "classical_ml", "oracle", "crlb"):
        assert f"<td>{name}</td>" in page
    assert "commit" in page and "nw-italy" in page
    run_id = next(
        line.split(":", 1)[1].strip()
        for line in (ws / "run" / "config.yaml").read_text().splitlines()
        if line.startswith("mlflow_run_id:")
    )
    logged = [a.path for a in MlflowClient(uri).list_artifacts(run_id, "evaluation")]
    assert "evaluation/report.html" in logged
    with chromium_context(tmp_path / "profile") as browser:
        view = browser.new_page()
        errors = []
        view.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        view.goto((out / "report.html").as_uri())
        assert view.locator("img").count() == 4
        assert all(view.evaluate("[...document.images].map(i => i.naturalWidth > 0)"))
        assert errors == []
        shots = Path(SCREENSHOT_DIR) if SCREENSHOT_DIR else tmp_path
        view.screenshot(path=shots / "evaluation-report.png", full_page=False)
    assert np.frombuffer((shots / "evaluation-report.png").read_bytes()[:8], np.uint8).tolist()[1:4] == [80, 78, 71]
