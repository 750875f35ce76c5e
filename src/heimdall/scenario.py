"""Scenarios: the receiver network, the area, the band and the radio environment, from YAML.

A scenario fixes everything the simulator needs except the dataset seed. It is parsed into frozen
dataclasses; any unknown key, wrong type, value in the wrong unit or inconsistent geometry raises
`ScenarioError` naming the field (e.g. ``receivers[2].lat``). Scenario text also travels inside stores and
models, so wherever it comes from it is parsed by `scenario_from_text`: plain YAML without aliases, with
the text, strings, lists and numbers bounded.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from heimdall.errors import ScenarioError
from heimdall.geo import LocalFrame
from heimdall.plain_yaml import load_plain_yaml, read_bounded_text

EMISSIONS = ("nbfm", "cw", "afsk", "fsk4")
SHADOWING_MODES = ("fixed", "iid")
PATH_LOSS_MODELS = ("two_ray_diffraction", "okumura_hata")
HATA_ENVIRONMENTS = ("urban", "suburban", "open")
MIN_RECEIVER_SEPARATION_M = 100.0
MAX_RECEIVERS = 256
MAX_SCENARIO_CHARS = 256 * 1024
MAX_NAME_CHARS = 200  # ids and names
MAX_DESCRIPTION_CHARS = 10_000
MAX_SHADOWING_COMPONENTS = 8

_REQUIRED = object()


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
    """Where transmitters may be: the receivers' bounding box grown by margin_m, or an explicit bbox."""

    margin_m: float = 20_000.0
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
    """Median path-loss model (see docs/PHYSICS.md)."""

    model: str = "two_ray_diffraction"
    earth_radius_factor: float = 4.0 / 3.0
    hata_environment: str = "suburban"  # okumura_hata only: urban, suburban or open


@dataclass(frozen=True)
class Fading:
    """Small-scale fading inside the window: Rician with K-factor, Doppler from the transmitter speed."""

    rician_k_db_fixed: float = 10.0
    rician_k_db_mobile: float = 0.0
    fixed_doppler_hz: float = 0.5
    n_paths: int = 8


@dataclass(frozen=True)
class Environment:
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
    A receiver hears a transmission when its measured SNR in the channel is ≥ detection_snr_db;
    a transmission is kept when at least min_receivers hear it.
    """

    sample_rate_hz: float = 48_000.0
    window_samples: int = 2048
    channel_bandwidth_hz: float = 16_000.0
    full_scale_dbm: float = -50.0
    detection_snr_db: float = 6.0
    min_receivers: int = 3


@dataclass(frozen=True)
class FeatureSettings:
    """Welch PSD settings of the feature extractor (see heimdall.features)."""

    segment_samples: int = 256
    psd_bins: int = 32
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
        return 299_792_458.0 / self.frequency_hz

    @functools.cached_property
    def frame(self) -> LocalFrame:
        """The local east/north frame, centred on the receivers' centroid (built once per scenario)."""
        return LocalFrame.centred_on([r.lat for r in self.receivers], [r.lon for r in self.receivers])

    def receiver_positions_m(self) -> np.ndarray:
        """float64 [n_rx, 2] receiver east/north in the local frame."""
        return self.frame.to_local([r.lat for r in self.receivers], [r.lon for r in self.receivers])

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
            m = self.area.margin_m
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
        return json.loads(json.dumps(d))  # tuples → lists

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def sha256(self) -> str:
        """Content hash of the scenario (stored with datasets and models)."""
        canon = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()

    def with_shadowing_mode(self, mode: str) -> "Scenario":
        """The same scenario with another shadowing mode (e.g. the i.i.d. control)."""
        sh = dataclasses.replace(self.environment.shadowing, mode=mode)
        env = dataclasses.replace(self.environment, shadowing=sh)
        return dataclasses.replace(self, environment=env, name=f"{self.name}-{mode}")


# ---------------------------------------------------------------------------------------------
# Parsing and validation


def _number(v: Any, where: str, unit: str, lo: float | None = None, hi: float | None = None, hint: str = "") -> float:
    if isinstance(v, str):  # YAML 1.1 reads 145.0e6 (no sign in the exponent) as a string
        try:
            v = float(v)
        except ValueError:
            raise ScenarioError(f"{where}: expected a number in {unit}, got {v!r}") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ScenarioError(f"{where}: expected a number in {unit}, got {v!r:.80}")
    try:
        x = float(v)
    except OverflowError:
        x = float("inf")
    if not np.isfinite(x):
        raise ScenarioError(f"{where}: expected a finite number in {unit}, got {v!r:.40}")
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        rng = f"[{lo:g}, {hi:g}]" if lo is not None and hi is not None else (f"≥ {lo:g}" if lo is not None else f"≤ {hi:g}")
        raise ScenarioError(f"{where}: {x:g} {unit} is outside the valid range {rng}{hint}")
    return x


def _integer(v: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ScenarioError(f"{where}: expected an integer, got {v!r:.80}")
    if not lo <= v <= hi:
        raise ScenarioError(f"{where}: {v:.4g} is outside the valid range [{lo}, {hi}]")
    return v


def _text(v: Any, where: str, max_chars: int) -> str:
    if not isinstance(v, str):
        raise ScenarioError(f"{where}: expected a string, got {v!r:.80}")
    if len(v) > max_chars:
        raise ScenarioError(f"{where}: {len(v)} characters, at most {max_chars}")
    return v


def _string(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ScenarioError(f"{where}: expected a non-empty string, got {v!r:.80}")
    return _text(v, where, MAX_NAME_CHARS)


def _range(v: Any, where: str, unit: str, lo: float, hi: float) -> tuple[float, float]:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = [v, v]
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ScenarioError(f"{where}: expected [min, max] in {unit}, got {v!r:.80}")
    a, b = (_number(x, f"{where}[{i}]", unit, lo, hi) for i, x in enumerate(v))
    if a > b:
        raise ScenarioError(f"{where}: min {a:g} is larger than max {b:g}")
    return (a, b)


def _section(d: Any, where: str, spec: dict[str, tuple[Callable[[Any, str], Any], Any]]) -> dict[str, Any]:
    """Parse mapping `d` by `spec` {key: (parser(value, where), default or _REQUIRED)}."""
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ScenarioError(f"{where or 'scenario'}: expected a mapping, got {type(d).__name__}")
    unknown = sorted(str(k) for k in set(d) - set(spec))
    if unknown:
        raise ScenarioError(
            f"{where + '.' if where else ''}{unknown[0]}: unknown key; expected one of {', '.join(spec)}"
        )
    out = {}
    for key, (parse, default) in spec.items():
        path = f"{where}.{key}" if where else key
        if key in d and not (d[key] is None and default is not _REQUIRED):  # null: the default
            out[key] = parse(d[key], path)
        elif default is _REQUIRED:
            raise ScenarioError(f"{path}: required key is missing")
        else:
            out[key] = default
    return out


def _receiver(d: Any, where: str) -> Receiver:
    f = _section(
        d,
        where,
        {
            "id": (_string, _REQUIRED),
            "name": (_string, None),
            "lat": (lambda v, w: _number(v, w, "degrees", -90, 90), _REQUIRED),
            "lon": (lambda v, w: _number(v, w, "degrees", -180, 180), _REQUIRED),
            "antenna_height_m": (lambda v, w: _number(v, w, "m", 0.5, 3000), _REQUIRED),
            "noise_figure_db": (lambda v, w: _number(v, w, "dB", 0, 30), 6.0),
            "gain_offset_db": (lambda v, w: _number(v, w, "dB", -30, 30), 0.0),
        },
    )
    f["name"] = f["name"] or f["id"]
    return Receiver(**f)


def _receivers(v: Any, where: str) -> tuple[Receiver, ...]:
    if not isinstance(v, list) or not 2 <= len(v) <= MAX_RECEIVERS:
        raise ScenarioError(f"{where}: expected a list of 2 to {MAX_RECEIVERS} receivers, got "
                            f"{f'{len(v)} receivers' if isinstance(v, list) else repr(v)[:80]}")
    rx = tuple(_receiver(r, f"{where}[{i}]") for i, r in enumerate(v))
    seen: dict[str, int] = {}
    for i, r in enumerate(rx):
        if r.id in seen:
            raise ScenarioError(f"{where}[{i}].id: duplicate receiver id {r.id!r} (also {where}[{seen[r.id]}])")
        seen[r.id] = i
    en = LocalFrame.centred_on([r.lat for r in rx], [r.lon for r in rx]).to_local(
        [r.lat for r in rx], [r.lon for r in rx]
    )
    dist = np.hypot(*(en[:, None, :] - en[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(dist, np.inf)
    i, j = np.unravel_index(np.argmin(dist), dist.shape)
    if dist[i, j] < MIN_RECEIVER_SEPARATION_M:
        a, b = sorted((int(i), int(j)))
        raise ScenarioError(
            f"{where}[{b}]: receiver {rx[b].id!r} overlaps {where}[{a}] {rx[a].id!r} "
            f"({dist[i, j]:.0f} m apart; expected ≥ {MIN_RECEIVER_SEPARATION_M:.0f} m)"
        )
    return rx


def _area(v: Any, where: str) -> Area:
    f = _section(
        v,
        where,
        {
            "margin_m": (lambda x, w: _number(x, w, "m", 0, 1_000_000), 20_000.0),
            "bbox": (_bbox, None),
        },
    )
    return Area(**f)


def _bbox(v: Any, where: str) -> tuple[float, float, float, float]:
    if not isinstance(v, (list, tuple)) or len(v) != 4:
        raise ScenarioError(f"{where}: expected [lat_min, lon_min, lat_max, lon_max] in degrees, got {v!r:.80}")
    la0 = _number(v[0], f"{where}[0]", "degrees", -90, 90)
    lo0 = _number(v[1], f"{where}[1]", "degrees", -180, 180)
    la1 = _number(v[2], f"{where}[2]", "degrees", -90, 90)
    lo1 = _number(v[3], f"{where}[3]", "degrees", -180, 180)
    if la1 <= la0 or lo1 <= lo0:
        raise ScenarioError(f"{where}: empty area (expected lat_min < lat_max and lon_min < lon_max), got {list(v)}")
    return (la0, lo0, la1, lo1)


def _transmitter(v: Any, where: str) -> Transmitter:
    f = _section(
        v,
        where,
        {
            "power_dbm": (lambda x, w: _range(x, w, "dBm", -30, 70), Transmitter.power_dbm),
            "antenna_height_m": (lambda x, w: _range(x, w, "m", 0.5, 3000), Transmitter.antenna_height_m),
            "mobile_fraction": (lambda x, w: _number(x, w, "(fraction)", 0, 1), Transmitter.mobile_fraction),
            "speed_mps": (lambda x, w: _range(x, w, "m/s", 0, 100), Transmitter.speed_mps),
        },
    )
    return Transmitter(**f)


def _component(v: Any, where: str) -> ShadowingComponent:
    f = _section(
        v,
        where,
        {
            "sigma_db": (lambda x, w: _number(x, w, "dB", 0, 30), _REQUIRED),
            "correlation_m": (lambda x, w: _number(x, w, "m", 50, 1_000_000), _REQUIRED),
        },
    )
    return ShadowingComponent(**f)


def _shadowing(v: Any, where: str) -> Shadowing:
    def components(x: Any, w: str) -> tuple[ShadowingComponent, ...]:
        if not isinstance(x, list) or not 1 <= len(x) <= MAX_SHADOWING_COMPONENTS:
            raise ScenarioError(f"{w}: expected a list of 1 to {MAX_SHADOWING_COMPONENTS} {{sigma_db, correlation_m}}, "
                                f"got {x!r:.80}")
        return tuple(_component(c, f"{w}[{i}]") for i, c in enumerate(x))

    f = _section(
        v,
        where,
        {
            "mode": (lambda x, w: _choice(x, w, SHADOWING_MODES), "fixed"),
            "components": (components, Shadowing.components),
            "seed": (lambda x, w: _integer(x, w, 0, 2**63 - 1), 1),
        },
    )
    return Shadowing(**f)


def _choice(v: Any, where: str, options: tuple[str, ...]) -> str:
    if v not in options:
        raise ScenarioError(f"{where}: expected one of {', '.join(options)}, got {v!r:.80}")
    return v


def _environment(v: Any, where: str) -> Environment:
    f = _section(
        v,
        where,
        {
            "path_loss": (
                lambda x, w: PathLoss(
                    **_section(
                        x,
                        w,
                        {
                            "model": (lambda y, ww: _choice(y, ww, PATH_LOSS_MODELS), "two_ray_diffraction"),
                            "earth_radius_factor": (lambda y, ww: _number(y, ww, "(factor)", 0.5, 10), 4 / 3),
                            "hata_environment": (lambda y, ww: _choice(y, ww, HATA_ENVIRONMENTS), "suburban"),
                        },
                    )
                ),
                PathLoss(),
            ),
            "shadowing": (_shadowing, Shadowing()),
            "fading": (
                lambda x, w: Fading(
                    **_section(
                        x,
                        w,
                        {
                            "rician_k_db_fixed": (lambda y, ww: _number(y, ww, "dB", -40, 40), 10.0),
                            "rician_k_db_mobile": (lambda y, ww: _number(y, ww, "dB", -40, 40), 0.0),
                            "fixed_doppler_hz": (lambda y, ww: _number(y, ww, "Hz", 0, 100), 0.5),
                            "n_paths": (lambda y, ww: _integer(y, ww, 1, 64), 8),
                        },
                    )
                ),
                Fading(),
            ),
        },
    )
    return Environment(**f)


def _signals(v: Any, where: str) -> Signals:
    def mix(x: Any, w: str) -> tuple[tuple[str, float], ...]:
        if not isinstance(x, dict) or not x:
            raise ScenarioError(f"{w}: expected a mapping emission → weight over {', '.join(EMISSIONS)}, "
                                f"got {x!r:.80}")
        out = []
        for k, val in x.items():
            if k not in EMISSIONS:
                raise ScenarioError(f"{w}.{k!s:.40}: unknown emission; expected one of {', '.join(EMISSIONS)}")
            out.append((k, _number(val, f"{w}.{k}", "(weight)", 0, 1e6)))
        if sum(p for _, p in out) <= 0:
            raise ScenarioError(f"{w}: the weights sum to 0; at least one emission needs a positive weight")
        return tuple(out)

    f = _section(
        v,
        where,
        {
            "mix": (mix, Signals.mix),
            "carrier_offset_hz": (lambda x, w: _number(x, w, "Hz", 0, 1e6), 1_500.0),
        },
    )
    return Signals(**f)


def _receiver_chain(v: Any, where: str) -> ReceiverChain:
    f = _section(
        v,
        where,
        {
            "sample_rate_hz": (lambda x, w: _number(x, w, "Hz", 1_000, 100e6, " (give the rate in Hz)"), 48_000.0),
            "window_samples": (lambda x, w: _integer(x, w, 64, 1 << 22), 2048),
            "channel_bandwidth_hz": (lambda x, w: _number(x, w, "Hz", 100, 100e6), 16_000.0),
            "full_scale_dbm": (lambda x, w: _number(x, w, "dBm", -150, 30), -50.0),
            "detection_snr_db": (lambda x, w: _number(x, w, "dB", -20, 60), 6.0),
            "min_receivers": (lambda x, w: _integer(x, w, 1, 1000), 3),
        },
    )
    return ReceiverChain(**f)


def _features(v: Any, where: str) -> FeatureSettings:
    f = _section(
        v,
        where,
        {
            "segment_samples": (lambda x, w: _integer(x, w, 16, 1 << 16), 256),
            "psd_bins": (lambda x, w: _integer(x, w, 1, 4096), 32),
            "noise_band_hz": (lambda x, w: _range(x, w, "Hz", 0, 50e6), (10_000.0, 22_000.0)),
        },
    )
    return FeatureSettings(**f)


def scenario_from_dict(d: Any) -> Scenario:
    """Validate plain data (e.g. parsed YAML) into a Scenario; raises ScenarioError naming the field."""
    f = _section(
        d,
        "",
        {
            "name": (_string, _REQUIRED),
            "description": (lambda x, w: _text(x, w, MAX_DESCRIPTION_CHARS), ""),
            "frequency_hz": (
                lambda x, w: _number(x, w, "Hz", 30e6, 3e9, " (VHF/UHF; give the frequency in Hz, e.g. 145.0e6)"),
                _REQUIRED,
            ),
            "receivers": (_receivers, _REQUIRED),
            "area": (_area, Area()),
            "transmitter": (_transmitter, Transmitter()),
            "environment": (_environment, Environment()),
            "signals": (_signals, Signals()),
            "receiver_chain": (_receiver_chain, ReceiverChain()),
            "features": (_features, FeatureSettings()),
        },
    )
    sc = Scenario(**f)
    _check_consistency(sc)
    return sc


def _check_consistency(sc: Scenario) -> None:
    ch, ft = sc.receiver_chain, sc.features
    nyquist = ch.sample_rate_hz / 2
    if ch.channel_bandwidth_hz >= ch.sample_rate_hz:
        raise ScenarioError(
            f"receiver_chain.channel_bandwidth_hz: {ch.channel_bandwidth_hz:g} Hz must be below the sample rate "
            f"{ch.sample_rate_hz:g} Hz"
        )
    if ft.segment_samples > ch.window_samples:
        raise ScenarioError(
            f"features.segment_samples: {ft.segment_samples} is longer than receiver_chain.window_samples "
            f"{ch.window_samples}"
        )
    if ft.segment_samples % ft.psd_bins:
        raise ScenarioError(
            f"features.psd_bins: {ft.psd_bins} must divide features.segment_samples {ft.segment_samples}"
        )
    lo, hi = ft.noise_band_hz
    if lo < ch.channel_bandwidth_hz / 2 or hi > nyquist:
        raise ScenarioError(
            f"features.noise_band_hz: [{lo:g}, {hi:g}] Hz must lie outside the channel (≥ "
            f"{ch.channel_bandwidth_hz / 2:g} Hz) and inside the Nyquist band (≤ {nyquist:g} Hz)"
        )
    if hi - lo < 2 * ch.sample_rate_hz / ft.segment_samples:
        raise ScenarioError(f"features.noise_band_hz: [{lo:g}, {hi:g}] Hz is narrower than two PSD bins")
    if ch.min_receivers > len(sc.receivers):
        raise ScenarioError(
            f"receiver_chain.min_receivers: {ch.min_receivers} is more than the {len(sc.receivers)} receivers"
        )
    if sc.area.bbox is None:
        e0, n0, e1, n1 = sc.area_bounds_m()
        if e1 - e0 <= 0 or n1 - n0 <= 0:
            raise ScenarioError("area: empty area (the receivers are collinear and area.margin_m is 0)")


# ---------------------------------------------------------------------------------------------
# Loading


def builtin_names() -> list[str]:
    """Names of the scenarios shipped with Heimdall."""
    folder = resources.files("heimdall") / "configs" / "scenarios"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def scenario_from_text(text: Any, origin: str) -> Scenario:
    """A scenario from YAML text of any origin (a file, a store attribute, a model's metadata), parsed as untrusted
    plain data; raises ScenarioError naming `origin` and the field."""
    data = load_plain_yaml(text, origin, ScenarioError, MAX_SCENARIO_CHARS)
    try:
        return scenario_from_dict(data)
    except ScenarioError as exc:
        raise ScenarioError(f"{origin}: {exc}") from None


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A built-in scenario by name (e.g. ``nw-italy``) or a YAML file by path."""
    name = str(name_or_path)
    p = Path(name)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ScenarioError(f"{p}: scenario file not found")
        return scenario_from_text(read_bounded_text(p, ScenarioError, MAX_SCENARIO_CHARS), str(p))
    if name in builtin_names():
        res = resources.files("heimdall") / "configs" / "scenarios" / f"{name}.yaml"
        return scenario_from_text(res.read_text(encoding="utf-8"), f"built-in scenario {name!r}")
    raise ScenarioError(
        f"scenario {name!r}: neither a file nor a built-in scenario (built-ins: {', '.join(builtin_names())})"
    )


DEFAULT_SCENARIO = "nw-italy"
