"""The median path loss the simulator and the radio map compute with.

The models, their formulas and their parameters live in one registry, heimdall.scenario.path_loss, because the
scenario schema validates environment.path_loss from it and the scenario stage comes before sim; this module is
where the later stages import them from. `median_path_loss_db(params, d, f, h_t, h_r)` is the scenario's model
(params.model) with its slope correction; the single formulas are exported for tests and for the radio map's
log-distance shape.
"""

from __future__ import annotations

from heimdall.scenario.path_loss import (
    diffraction_loss_db,
    free_space_loss_db,
    log_distance_loss_db,
    median_path_loss_db,
    okumura_hata_loss_db,
    path_loss_db,
    radio_horizon_m,
    slope_decades,
    two_ray_loss_db,
)

__all__ = [
    "diffraction_loss_db",
    "free_space_loss_db",
    "log_distance_loss_db",
    "median_path_loss_db",
    "okumura_hata_loss_db",
    "path_loss_db",
    "radio_horizon_m",
    "slope_decades",
    "two_ray_loss_db",
]
