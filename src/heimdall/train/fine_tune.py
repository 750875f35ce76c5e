"""Fine-tuning: a new run that starts from another checkpoint's weights (e.g. a model trained on simulation, adapted
to recordings of a real network), with the input normalisation of the new data unless it is kept."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from heimdall.errors import ConfigError
from heimdall.train.config import NetConfig

if TYPE_CHECKING:
    import numpy as np

    from heimdall.train.task import LocalizationTask

IRRELEVANT = ("dropout",)  # may differ: it changes training, not the weights


def initialise_from(
    task: LocalizationTask,
    checkpoint: str | Path,
    normalisation: tuple[np.ndarray, np.ndarray, float],
    keep_normalisation: bool = False,
) -> None:
    """Load `checkpoint`'s weights into `task`'s network; ConfigError naming every architecture option (or the
    feature count) that differs. `normalisation` (feature mean, std, position scale in m) of the new data replaces
    the checkpoint's unless `keep_normalisation`; the covariance calibration starts again."""
    import torch

    from heimdall.train.task import load_task

    source = load_task(checkpoint).net
    differ = [
        f"{f.name}: checkpoint {getattr(source.cfg, f.name)}, this run {getattr(task.net.cfg, f.name)}"
        for f in dataclasses.fields(NetConfig)
        if f.name not in IRRELEVANT and getattr(source.cfg, f.name) != getattr(task.net.cfg, f.name)
    ]
    if differ:
        raise ConfigError(
            f"--init-from {checkpoint}: its network does not fit this run ({'; '.join(differ)}); give the "
            "checkpoint's architecture flags, or train on features of the same layout"
        )
    task.net.load_state_dict(source.state_dict())
    if not keep_normalisation:
        task.net.set_normalisation(*normalisation)
    task.net.covariance_scale = torch.tensor(1.0)  # recalibrated on this run's validation split
