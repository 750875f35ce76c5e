"""The median path-loss models a scenario may name (environment.path_loss.model), in one registry.

Each model is a `PathLossModel` in `MODELS`: its name, its formula (distance, frequency, antenna heights and the
scenario's PathLoss → median loss in dB), the PathLoss fields it reads and a line saying what it is. `PARAMETERS`
describes every other field of environment.path_loss (unit and bounds, or choices, and what it means; the defaults
are PathLoss's). The schema validates a scenario's environment.path_loss from these entries
(heimdall.scenario.schema), and the simulator, the radio map and the oracle compute from the same ones
(`median_path_loss_db`). docs/PHYSICS.md gives the formulas and their validity.

Registered here: ``two_ray_diffraction`` (plane-earth two-ray or free space plus smooth-earth
diffraction, whichever is larger), ``okumura_hata`` (Hata's empirical fit, never below free space) and
``log_distance`` (30 dB/decade, no absolute calibration). Every model's slope is then corrected by
``slope_correction_db_per_decade``, pivoting at SLOPE_REFERENCE_M.

To add a model, write its formula here under the `path_loss_model` decorator (and describe it in docs/PHYSICS.md);
a model that needs a new parameter also needs a PathLoss field (heimdall.scenario.domain) and a PARAMETERS entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from heimdall.scenario.domain import PathLoss

SPEED_OF_LIGHT_MPS = 299_792_458.0
EARTH_RADIUS_M = 6_371_000.0
MIN_DISTANCE_M = 10.0
# Limit 2 + 20·log10(K) of the height-gain function (P.526 §3.1.1.2) with K ≈ 0.01, average land
# and vertical polarisation at VHF/UHF.
HEIGHT_GAIN_FLOOR_DB = 2.0 + 20.0 * np.log10(0.01)
LOG_DISTANCE_EXPONENT = 3.0
SLOPE_REFERENCE_M = 10_000.0
SLOPE_MIN_DISTANCE_M = 100.0


def free_space_loss_db(distance_m: np.ndarray, frequency_hz: float) -> np.ndarray:
    """Free-space path loss 20·log10(4πd/λ) in dB. distance_m: float [...] → float [...]."""
    d = np.maximum(np.asarray(distance_m, float), MIN_DISTANCE_M)
    return 20.0 * np.log10(4.0 * np.pi * d * frequency_hz / SPEED_OF_LIGHT_MPS)


def two_ray_loss_db(
    distance_m: np.ndarray, frequency_hz: float, h_tx_m: np.ndarray | float, h_rx_m: np.ndarray
) -> np.ndarray:
    """Plane-earth two-ray loss in dB: free space before the breakpoint, 40·log10(d²/(h_t·h_r)) after."""
    d = np.maximum(np.asarray(distance_m, float), MIN_DISTANCE_M)
    plane_earth = 20.0 * np.log10(d**2 / (np.asarray(h_tx_m, float) * np.asarray(h_rx_m, float)))
    return np.maximum(free_space_loss_db(d, frequency_hz), plane_earth)


def _height_gain_db(y: np.ndarray) -> np.ndarray:
    """G(Y) of ITU-R P.526 §3.1.1.2 (β = 1), floored at HEIGHT_GAIN_FLOOR_DB."""
    y = np.asarray(y, float)
    high = 17.6 * np.sqrt(np.maximum(y - 1.1, 1e-12)) - 5.0 * np.log10(np.maximum(y - 1.1, 1e-12)) - 8.0
    low = 20.0 * np.log10(y + 0.1 * y**3)
    return np.maximum(np.where(y > 2.0, high, low), HEIGHT_GAIN_FLOOR_DB)


def diffraction_loss_db(
    distance_m: np.ndarray,
    frequency_hz: float,
    h_tx_m: np.ndarray | float,
    h_rx_m: np.ndarray,
    earth_radius_factor: float = 4.0 / 3.0,
) -> np.ndarray:
    """Smooth-earth diffraction loss relative to free space in dB (≥ 0), ITU-R P.526 first term.

    20·log10(E/E0) = F(X) + G(Y1) + G(Y2) with X, Y the normalised distance and heights.
    """
    f_mhz = frequency_hz / 1e6
    a_km = earth_radius_factor * EARTH_RADIUS_M / 1e3
    d_km = np.maximum(np.asarray(distance_m, float), MIN_DISTANCE_M) / 1e3
    x = 2.188 * f_mhz ** (1 / 3) * a_km ** (-2 / 3) * d_km
    y_scale = 9.575e-3 * f_mhz ** (2 / 3) * a_km ** (-1 / 3)
    f_x = np.where(
        x >= 1.6,
        11.0 + 10.0 * np.log10(x) - 17.6 * x,
        -20.0 * np.log10(x) - 5.6488 * x**1.425,
    )
    relative_field_db = (
        f_x
        + _height_gain_db(y_scale * np.asarray(h_tx_m, float))
        + _height_gain_db(y_scale * np.asarray(h_rx_m, float))
    )
    return np.maximum(-relative_field_db, 0.0)


def radio_horizon_m(h_tx_m: np.ndarray, h_rx_m: np.ndarray, earth_radius_factor: float = 4.0 / 3.0) -> np.ndarray:
    """Line-of-sight distance over a smooth earth: √(2·a·h_t) + √(2·a·h_r) in metres."""
    a = earth_radius_factor * EARTH_RADIUS_M
    return np.sqrt(2 * a * np.asarray(h_tx_m, float)) + np.sqrt(2 * a * np.asarray(h_rx_m, float))


def path_loss_db(
    distance_m: np.ndarray,
    frequency_hz: float,
    h_tx_m: np.ndarray | float,
    h_rx_m: np.ndarray,
    earth_radius_factor: float = 4.0 / 3.0,
) -> np.ndarray:
    """Median basic transmission loss in dB of model ``two_ray_diffraction``; arrays broadcast."""
    spherical = free_space_loss_db(distance_m, frequency_hz) + diffraction_loss_db(
        distance_m, frequency_hz, h_tx_m, h_rx_m, earth_radius_factor
    )
    return np.maximum(two_ray_loss_db(distance_m, frequency_hz, h_tx_m, h_rx_m), spherical)


def okumura_hata_loss_db(
    distance_m: np.ndarray,
    frequency_hz: float,
    h_tx_m: np.ndarray | float,
    h_rx_m: np.ndarray,
    environment: str = "suburban",
) -> np.ndarray:
    """Hata's median loss in dB for a base (receiver) of height h_rx_m and a mobile (transmitter) of h_tx_m.

    Urban (small/medium city): 69.55 + 26.16·log f − 13.82·log h_b − a(h_m) + (44.9 − 6.55·log h_b)·log d,
    a(h_m) = (1.1·log f − 0.7)·h_m − (1.56·log f − 0.8); suburban subtracts 2·log²(f/28) + 5.4, open
    4.78·log²f − 18.33·log f + 40.94 (f in MHz, d in km, h in m; h_b ≥ 1 m). Floored at free space.
    """
    f_mhz = frequency_hz / 1e6
    log_f = np.log10(f_mhz)
    d_km = np.maximum(np.asarray(distance_m, float), MIN_DISTANCE_M) / 1e3
    h_b = np.maximum(np.asarray(h_rx_m, float), 1.0)
    h_m = np.asarray(h_tx_m, float)
    a_hm = (1.1 * log_f - 0.7) * h_m - (1.56 * log_f - 0.8)
    urban = 69.55 + 26.16 * log_f - 13.82 * np.log10(h_b) - a_hm + (44.9 - 6.55 * np.log10(h_b)) * np.log10(d_km)
    correction = {
        "urban": 0.0,
        "suburban": 2.0 * np.log10(f_mhz / 28.0) ** 2 + 5.4,
        "open": 4.78 * log_f**2 - 18.33 * log_f + 40.94,
    }[environment]
    return np.maximum(urban - correction, free_space_loss_db(distance_m, frequency_hz))


def log_distance_loss_db(distance_m: np.ndarray) -> np.ndarray:
    """Loss of model ``log_distance`` in dB: 10·LOG_DISTANCE_EXPONENT·log10(d / 1 m). float [...] → float [...]."""
    return 10.0 * LOG_DISTANCE_EXPONENT * np.log10(np.maximum(np.asarray(distance_m, float), SLOPE_MIN_DISTANCE_M))


def slope_decades(distance_m: np.ndarray) -> np.ndarray:
    """log10(d / SLOPE_REFERENCE_M), d at least SLOPE_MIN_DISTANCE_M: what a slope correction multiplies."""
    return np.log10(np.maximum(np.asarray(distance_m, float), SLOPE_MIN_DISTANCE_M) / SLOPE_REFERENCE_M)


HATA_ENVIRONMENTS = ("urban", "suburban", "open")


@dataclass(frozen=True)
class Parameter:
    """A field of environment.path_loss besides `model`: a number in `unit` within `bounds` (inclusive), or one of
    `choices`; `doc` says what it means. Its default is PathLoss's field of the same name."""

    name: str
    doc: str
    unit: str = ""
    bounds: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.bounds is None) == (not self.choices):
            raise ValueError(f"path-loss parameter {self.name!r}: give either bounds or choices")
        if self.name not in PathLoss.__dataclass_fields__:
            raise ValueError(f"path-loss parameter {self.name!r}: not a field of PathLoss")

    @property
    def default(self) -> float | str:
        """The value a scenario that leaves the field out gets (PathLoss's default)."""
        value: float | str = getattr(PathLoss, self.name)
        return value


PARAMETERS: dict[str, Parameter] = {
    p.name: p
    for p in (
        Parameter(
            "earth_radius_factor",
            "effective earth radius over 6371 km (refraction; 4/3 in a standard atmosphere)",
            "(factor)",
            (0.5, 10),
        ),
        Parameter("hata_environment", "the area Hata's fit corrects for", choices=HATA_ENVIRONMENTS),
        Parameter(
            "slope_correction_db_per_decade",
            "dB per decade of distance added to every model's slope, pivoting at SLOPE_REFERENCE_M",
            "dB/decade",
            (-20, 20),
        ),
    )
}

LossFunction = Callable[[np.ndarray, float, "np.ndarray | float", np.ndarray, PathLoss], np.ndarray]


@dataclass(frozen=True)
class PathLossModel:
    """A registered model: loss_db(distance_m, frequency_hz, h_tx_m, h_rx_m, params) → median loss in dB (arrays
    broadcast; params: the scenario's PathLoss, of which it reads the fields `parameters` besides the slope
    correction, which every model gets); `doc` says what it is."""

    name: str
    loss_db: LossFunction
    parameters: tuple[str, ...]
    doc: str


MODELS: dict[str, PathLossModel] = {}  # name → model, in the order the schema lists them


def register(model: PathLossModel) -> PathLossModel:
    """Add `model` to MODELS; ValueError when its name is taken or it reads a field PARAMETERS does not describe."""
    if model.name in MODELS:
        raise ValueError(f"path-loss model {model.name!r} is already registered")
    unknown = [p for p in model.parameters if p not in PARAMETERS]
    if unknown:
        raise ValueError(
            f"path-loss model {model.name!r}: unknown parameters {unknown}; known: {', '.join(PARAMETERS)}"
        )
    MODELS[model.name] = model
    return model


def path_loss_model(name: str, parameters: tuple[str, ...], doc: str) -> Callable[[LossFunction], LossFunction]:
    """Decorator registering the formula it wraps as model `name` (see `register`)."""

    def wrap(loss_db: LossFunction) -> LossFunction:
        register(PathLossModel(name, loss_db, parameters, doc))
        return loss_db

    return wrap


def median_path_loss_db(
    params: PathLoss,
    distance_m: np.ndarray,
    frequency_hz: float,
    h_tx_m: np.ndarray | float,
    h_rx_m: np.ndarray,
) -> np.ndarray:
    """The scenario's median path loss in dB: the formula of model params.model, corrected by the model's
    slope_correction_db_per_decade; arrays broadcast. ValueError for a model name MODELS does not hold."""
    model = MODELS.get(params.model)
    if model is None:
        raise ValueError(f"unknown path-loss model {params.model!r}; expected one of {', '.join(MODELS)}")
    loss = model.loss_db(distance_m, frequency_hz, h_tx_m, h_rx_m, params)
    if params.slope_correction_db_per_decade:
        loss = loss + params.slope_correction_db_per_decade * slope_decades(distance_m)
    return loss


@path_loss_model(
    "two_ray_diffraction",
    ("earth_radius_factor",),
    "the larger of plane-earth two-ray and free space plus smooth-earth diffraction (ITU-R P.526); 30 MHz–3 GHz, "
    "1–200 km, heights 1–1000 m",
)
def _two_ray_diffraction(
    distance_m: np.ndarray, frequency_hz: float, h_tx_m: np.ndarray | float, h_rx_m: np.ndarray, params: PathLoss
) -> np.ndarray:
    return path_loss_db(distance_m, frequency_hz, h_tx_m, h_rx_m, params.earth_radius_factor)


@path_loss_model(
    "okumura_hata",
    ("hata_environment",),
    "Hata's fit of Okumura's measurements (receiver as base, transmitter as mobile), never below free space; "
    "fitted for 150–1500 MHz, 1–20 km",
)
def _okumura_hata(
    distance_m: np.ndarray, frequency_hz: float, h_tx_m: np.ndarray | float, h_rx_m: np.ndarray, params: PathLoss
) -> np.ndarray:
    return okumura_hata_loss_db(distance_m, frequency_hz, h_tx_m, h_rx_m, params.hata_environment)


@path_loss_model(
    "log_distance",
    (),
    "30 dB per decade from 0 dB at 1 m (d at least 100 m), no absolute calibration: the plain law a radio map "
    "falls back on",
)
def _log_distance(
    distance_m: np.ndarray, frequency_hz: float, h_tx_m: np.ndarray | float, h_rx_m: np.ndarray, params: PathLoss
) -> np.ndarray:
    # heights do not change this loss, but the result keeps the broadcast shape of all three
    return np.broadcast_arrays(log_distance_loss_db(distance_m), np.asarray(h_tx_m), np.asarray(h_rx_m))[0]
