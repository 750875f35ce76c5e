"""Evaluation plots (PNG, matplotlib): error CDF, calibration curve, map with ellipses, error heat map."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from heimdall.atomic import atomic_open
from heimdall.ellipse import outline
from heimdall.evaluation.estimators import ESTIMATORS
from heimdall.metrics import coverage_curve, error_m
from heimdall.units import distance_unit, format_distance

if TYPE_CHECKING:  # matplotlib is imported where a plot is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from heimdall.evaluation.estimators import Answers
    from heimdall.evaluation.test_set import TestSet
    from heimdall.geo import LocalFrame

MAP_SAMPLES = 30
ELLIPSE_POINTS = 64


def write_plots(out: Path, answers: dict[str, Answers], test: TestSet, metrics: dict) -> list[Path]:
    """Write the evaluation plots (errors, calibration, a map of the test set) into `out`; returns their paths.

    answers: each estimator's answers (keys of heimdall.evaluation.estimators.ESTIMATORS, whose labels and colours
    the plots use); metrics: metrics.json's content. Distances in m or km, whichever fits the errors' scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = test.target_m
    medians = [metrics["estimators"][name]["median_error_m"] for name in answers]
    unit, per_unit = distance_unit(float(np.nanmedian(medians)) if medians else 0.0)
    paths = []
    # 1. error CDF of every estimator on one axis
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, a in answers.items():
        e = np.sort(error_m(a.mean_m, truth)) / per_unit
        med = format_distance(metrics["estimators"][name]["median_error_m"])
        ax.plot(
            e,
            np.linspace(0, 1, len(e)),
            label=f"{ESTIMATORS[name].label} (median {med})",
            color=ESTIMATORS[name].colour,
        )
    ax.set_xscale("log")
    ax.set_xlabel(f"position error [{unit}]")
    ax.set_ylabel("fraction of test transmissions")
    ax.set_title(f"Error CDF, {len(truth)} test transmissions")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    paths.append(_save(fig, out / "error_cdf.png"))

    # 2. calibration curve of estimators with a covariance
    fig, ax = plt.subplots(figsize=(5, 5))
    nominal = np.linspace(0.05, 0.99, 30)
    for name, a in answers.items():
        if a.cov_m2 is not None:
            ax.plot(
                nominal,
                coverage_curve(a.mean_m, a.cov_m2, truth, nominal),
                label=ESTIMATORS[name].label,
                color=ESTIMATORS[name].colour,
            )
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="ideal")
    ax.set_xlabel("nominal ellipse probability")
    ax.set_ylabel("observed coverage")
    ax.set_title("Calibration of the uncertainty ellipses")
    ax.legend()
    ax.grid(True, alpha=0.3)
    paths.append(_save(fig, out / "calibration.png"))

    if test.scenario is None:
        return paths
    frame = test.scenario.frame
    rx_ll = frame.to_geodetic(test.rx_position_m)
    # 3. map: receivers, a sample of truths, model predictions and their 95 % ellipses
    main = "model" if "model" in answers else "classical_ml"
    pos, cov = answers[main].mean_m, answers[main].cov_m2
    fig, ax = plt.subplots(figsize=(8, 7))
    idx = np.random.default_rng(0).choice(len(truth), min(MAP_SAMPLES, len(truth)), replace=False)
    t_ll, p_ll = frame.to_geodetic(truth[idx]), frame.to_geodetic(pos[idx])
    for k, i in enumerate(idx):
        if cov is not None:
            ring = outline(pos[i], cov[i], 0.95, ELLIPSE_POINTS)
            ell = frame.to_geodetic(np.concatenate([ring, ring[:1]]))
            ax.plot(
                ell[:, 1],
                ell[:, 0],
                color=ESTIMATORS[main].colour,
                lw=0.7,
                alpha=0.6,
                label="95 % ellipse" if k == 0 else None,
            )
        ax.plot([t_ll[k, 1], p_ll[k, 1]], [t_ll[k, 0], p_ll[k, 0]], color="0.5", lw=0.6)
    ax.scatter(t_ll[:, 1], t_ll[:, 0], marker="x", color="k", label="true transmitter", zorder=3)
    ax.scatter(
        p_ll[:, 1],
        p_ll[:, 0],
        s=12,
        color=ESTIMATORS[main].colour,
        label=f"{ESTIMATORS[main].label} estimate",
        zorder=3,
    )
    ax.scatter(rx_ll[:, 1], rx_ll[:, 0], marker="^", s=90, color="C3", edgecolor="k", label="receiver", zorder=4)
    for r, ll in zip(test.scenario.receivers, rx_ll, strict=False):
        ax.annotate(r.name, (ll[1], ll[0]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    _geographic_axes(ax, frame, f"{test.scenario.name}: {len(idx)} test transmissions")
    paths.append(_save(fig, out / "map.png"))

    # 4. median error of the main estimator over the area
    unit, per_unit = distance_unit(metrics["estimators"][main]["median_error_m"])
    t_all = frame.to_geodetic(truth)
    fig, ax = plt.subplots(figsize=(8, 7))
    hb = ax.hexbin(
        t_all[:, 1],
        t_all[:, 0],
        C=error_m(pos, truth) / per_unit,
        reduce_C_function=np.median,
        gridsize=25,
        cmap="viridis",
        mincnt=3,
    )
    fig.colorbar(hb, ax=ax, label=f"median {ESTIMATORS[main].label} error [{unit}]")
    ax.scatter(rx_ll[:, 1], rx_ll[:, 0], marker="^", s=90, color="C3", edgecolor="k", label="receiver")
    _geographic_axes(ax, frame, f"{ESTIMATORS[main].label} error over the area")
    paths.append(_save(fig, out / "error_map.png"))
    return paths


def _geographic_axes(ax: Axes, frame: LocalFrame, title: str) -> None:
    """Longitude/latitude axes with a locally true aspect ratio."""
    ax.set_xlabel("longitude [°]")
    ax.set_ylabel("latitude [°]")
    ax.set_aspect(1 / np.cos(np.radians(frame.origin_lat)))
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)


def _save(fig: Figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
