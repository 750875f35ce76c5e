"""The scenario's domain: the receiver network, the area, the band and the radio environment, as frozen
dataclasses whose field defaults are the only defaults of a scenario (the YAML parser reads them from here)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml

from heimdall.geo import LocalFrame
from heimdall.scale import NetworkScale, network_scale

EMISSIONS = ("nbfm", "cw", "afsk", "fsk4")
SHADOWING_MODES = ("fixed", "iid")
MAX_RECEIVERS = 256
MAX_SCENARIO_CHARS = 256 * 1024
MAX_NAME_CHARS = 200  # ids and names
MAX_DESCRIPTION_CHARS = 10_000
MAX_SHADOWING_COMPONENTS = 8


@dataclass(frozen=True)
class Receiver:
    """One fixed receiver. antenna_height_m is the effective height above the surrounding terrain."""

    id: str
    name: str
    lat: float
    lon: float
    antenna_height_m: float
    noise_figure_db: float = 6.0
    gain_offset_db: float = 0.0


@dataclass(frozen=True)
class Area:
    """Where transmitters may be: the receivers' bounding box grown by margin_m (None: from the network's geometry,
    heimdall.scale), or an explicit bbox."""

    margin_m: float | None = None
    bbox: tuple[float, float, float, float] | None = None  # lat_min, lon_min, lat_max, lon_max


@dataclass(frozen=True)
class Transmitter:
    """Ranges the simulator draws transmitters from (uniformly)."""

    power_dbm: tuple[float, float] = (30.0, 47.0)
    antenna_height_m: tuple[float, float] = (1.5, 10.0)
    mobile_fraction: float = 0.5
    speed_mps: tuple[float, float] = (5.0, 30.0)


@dataclass(frozen=True)
class ShadowingComponent:
    """One Gaussian field with exponential correlation exp(-r / correlation_m)."""

    sigma_db: float
    correlation_m: float


@dataclass(frozen=True)
class Shadowing:
    """mode=fixed: one spatial field per receiver (terrain); mode=iid: a fresh draw per observation."""

    mode: str = "fixed"
    components: tuple[ShadowingComponent, ...] = (
        ShadowingComponent(6.0, 20_000.0),
        ShadowingComponent(5.0, 4_000.0),
    )
    seed: int = 1

    @property
    def sigma_db(self) -> float:
        """Total standard deviation of the shadowing in dB."""
        return float(np.sqrt(sum(c.sigma_db**2 for c in self.components)))


@dataclass(frozen=True)
class PathLoss:
    """Median path-loss model: `model` names a registered one (heimdall.scenario.path_loss, docs/PHYSICS.md)."""

    model: str = "two_ray_diffraction"
    earth_radius_factor: float = 4.0 / 3.0
    hata_environment: str = "suburban"  # okumura_hata only: urban, suburban or open
    slope_correction_db_per_decade: float = 0.0  # added to any model's slope, pivoting at 10 km


@dataclass(frozen=True)
class Fading:
    """Small-scale fading inside the window: Rician with K-factor, Doppler from the transmitter speed."""

    rician_k_db_fixed: float = 10.0
    rician_k_db_mobile: float = 0.0
    fixed_doppler_hz: float = 0.5
    n_paths: int = 8


@dataclass(frozen=True)
class Environment:
    """The radio environment: path loss, shadowing and fading."""

    path_loss: PathLoss = PathLoss()
    shadowing: Shadowing = Shadowing()
    fading: Fading = Fading()


@dataclass(frozen=True)
class Signals:
    """Emission mix (relative weights) and the random carrier offset range (± Hz)."""

    mix: tuple[tuple[str, float], ...] = (("nbfm", 0.4), ("cw", 0.15), ("afsk", 0.25), ("fsk4", 0.2))
    carrier_offset_hz: float = 1_500.0


@dataclass(frozen=True)
class ReceiverChain:
    """What every receiver records: complex baseband IQ around the scenario frequency.

    full_scale_dbm is the power (dBm) that a full-scale (|x|² = 1) signal corresponds to.
    A receiver hears a transmission when its measured SNR in the channel is ≥ detection_snr_db. Every
    transmission heard by at least one receiver is stored; min_receivers is the reporting rule: the
    localizer answers transmissions heard by at least that many (evaluation reports the share answered).
    """

    sample_rate_hz: float = 48_000.0
    window_samples: int = 2048
    channel_bandwidth_hz: float = 16_000.0
    full_scale_dbm: float = -50.0
    detection_snr_db: float = 6.0
    min_receivers: int = 1


@dataclass(frozen=True)
class FeatureSettings:
    """Welch PSD settings of the feature extractor (see heimdall.features)."""

    segment_samples: int = 256
    psd_bins: int = 32  # 0: no spectral features (power readings: power, noise and SNR only)
    noise_band_hz: tuple[float, float] = (10_000.0, 22_000.0)


@dataclass(frozen=True)
class Scenario:
    """A complete, validated scenario."""

    name: str
    frequency_hz: float
    receivers: tuple[Receiver, ...]
    description: str = ""
    area: Area = Area()
    transmitter: Transmitter = Transmitter()
    environment: Environment = Environment()
    signals: Signals = Signals()
    receiver_chain: ReceiverChain = ReceiverChain()
    features: FeatureSettings = FeatureSettings()

    @property
    def wavelength_m(self) -> float:
        """Carrier wavelength in metres."""
        return 299_792_458.0 / self.frequency_hz

    @functools.cached_property
    def frame(self) -> LocalFrame:
        """The local east/north frame, centred on the receivers' centroid (built once per scenario)."""
        return LocalFrame.centred_on([r.lat for r in self.receivers], [r.lon for r in self.receivers])

    def receiver_positions_m(self) -> np.ndarray:
        """float64 [n_rx, 2] receiver east/north in the local frame."""
        return self.frame.to_local([r.lat for r in self.receivers], [r.lon for r in self.receivers])

    @functools.cached_property
    def scale(self) -> NetworkScale:
        """The lengths that follow the receivers' geometry over the area (heimdall.scale.network_scale)."""
        return network_scale(self.receiver_positions_m(), self.area_bounds_m())

    def area_bounds_m(self) -> tuple[float, float, float, float]:
        """(east_min, north_min, east_max, north_max) of the transmitter area in the local frame."""
        if self.area.bbox is not None:
            la0, lo0, la1, lo1 = self.area.bbox
            lat = np.array([la0, la0, la1, la1, la0, la1, (la0 + la1) / 2, (la0 + la1) / 2])
            lon = np.array([lo0, lo1, lo0, lo1, (lo0 + lo1) / 2, (lo0 + lo1) / 2, lo0, lo1])
            en = self.frame.to_local(lat, lon)
            m = 0.0
        else:
            en = self.receiver_positions_m()
            m = network_scale(en).margin_m if self.area.margin_m is None else self.area.margin_m
        return (
            float(en[:, 0].min() - m),
            float(en[:, 1].min() - m),
            float(en[:, 0].max() + m),
            float(en[:, 1].max() + m),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (round-trips through `scenario_from_dict`)."""
        d = dataclasses.asdict(self)
        d["signals"]["mix"] = dict(self.signals.mix)
        if not self.environment.path_loss.slope_correction_db_per_decade:
            # added later: left out at its default so every scenario written before keeps its text and sha256
            del d["environment"]["path_loss"]["slope_correction_db_per_decade"]
        return json.loads(json.dumps(d))  # tuples → lists

    def to_yaml(self) -> str:
        """The scenario as YAML text (what the schema reads back)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def sha256(self) -> str:
        """Content hash of the scenario (stored with datasets and models)."""
        canon = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()

    def with_shadowing_mode(self, mode: str) -> Scenario:
        """The same scenario with another shadowing mode (e.g. the i.i.d. control)."""
        sh = dataclasses.replace(self.environment.shadowing, mode=mode)
        env = dataclasses.replace(self.environment, shadowing=sh)
        return dataclasses.replace(self, environment=env, name=f"{self.name}-{mode}")
