"""The scenario schema: YAML or plain data → a validated Scenario.

Any unknown key, wrong type, value in the wrong unit or inconsistent geometry raises `ScenarioError` naming
the field (e.g. ``receivers[2].lat``). Scenario text also travels inside stores and models, so wherever it
comes from it is parsed by `scenario_from_text`: plain YAML without aliases, with the text, strings, lists and
numbers bounded. Defaults are those of the dataclasses (heimdall.scenario.domain).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from heimdall.errors import ScenarioError
from heimdall.plain_yaml import load_plain_yaml
from heimdall.scenario.domain import (
    EMISSIONS,
    MAX_DESCRIPTION_CHARS,
    MAX_NAME_CHARS,
    MAX_RECEIVERS,
    MAX_SCENARIO_CHARS,
    MAX_SHADOWING_COMPONENTS,
    SHADOWING_MODES,
    Area,
    Environment,
    Fading,
    FeatureSettings,
    PathLoss,
    Receiver,
    ReceiverChain,
    Scenario,
    Shadowing,
    ShadowingComponent,
    Signals,
    Transmitter,
)
from heimdall.scenario.path_loss import MODELS, PARAMETERS, Parameter

_REQUIRED = object()


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
        rng = (
            f"[{lo:g}, {hi:g}]"
            if lo is not None and hi is not None
            else (f"≥ {lo:g}" if lo is not None else f"≤ {hi:g}")
        )
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
            "noise_figure_db": (lambda v, w: _number(v, w, "dB", 0, 30), Receiver.noise_figure_db),
            "gain_offset_db": (lambda v, w: _number(v, w, "dB", -30, 30), Receiver.gain_offset_db),
        },
    )
    f["name"] = f["name"] or f["id"]
    return Receiver(**f)


def _receivers(v: Any, where: str) -> tuple[Receiver, ...]:
    if not isinstance(v, list) or not 2 <= len(v) <= MAX_RECEIVERS:
        raise ScenarioError(
            f"{where}: expected a list of 2 to {MAX_RECEIVERS} receivers, got "
            f"{f'{len(v)} receivers' if isinstance(v, list) else repr(v)[:80]}"
        )
    rx = tuple(_receiver(r, f"{where}[{i}]") for i, r in enumerate(v))
    seen: dict[str, int] = {}  # receivers may share a site (several ids at one place); an id is one receiver
    for i, r in enumerate(rx):
        if r.id in seen:
            raise ScenarioError(f"{where}[{i}].id: duplicate receiver id {r.id!r} (also {where}[{seen[r.id]}])")
        seen[r.id] = i
    return rx


def _area(v: Any, where: str) -> Area:
    f = _section(
        v,
        where,
        {
            "margin_m": (lambda x, w: _number(x, w, "m", 0, 1_000_000), Area.margin_m),
            "bbox": (_bbox, Area.bbox),
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
            raise ScenarioError(
                f"{w}: expected a list of 1 to {MAX_SHADOWING_COMPONENTS} {{sigma_db, correlation_m}}, got {x!r:.80}"
            )
        return tuple(_component(c, f"{w}[{i}]") for i, c in enumerate(x))

    f = _section(
        v,
        where,
        {
            "mode": (lambda x, w: _choice(x, w, SHADOWING_MODES), Shadowing.mode),
            "components": (components, Shadowing.components),
            "seed": (lambda x, w: _integer(x, w, 0, 2**63 - 1), Shadowing.seed),
        },
    )
    return Shadowing(**f)


def _choice(v: Any, where: str, options: tuple[str, ...]) -> str:
    if v not in options:
        raise ScenarioError(f"{where}: expected one of {', '.join(options)}, got {v!r:.80}")
    return v


def _path_loss(v: Any, where: str) -> PathLoss:
    """environment.path_loss: `model` one of the registered models (heimdall.scenario.path_loss.MODELS), each other
    field as its PARAMETERS entry describes it."""
    spec: dict[str, tuple[Callable[[Any, str], Any], Any]] = {
        "model": (lambda x, w: _choice(x, w, tuple(MODELS)), PathLoss.model)
    }
    spec.update({p.name: (_parameter(p), p.default) for p in PARAMETERS.values()})
    return PathLoss(**_section(v, where, spec))


def _parameter(p: Parameter) -> Callable[[Any, str], Any]:
    """The parser of path-loss parameter `p`: one of its choices, or a number in its unit within its bounds."""
    if p.bounds is None:
        return lambda x, w: _choice(x, w, p.choices)
    lo, hi = p.bounds
    return lambda x, w: _number(x, w, p.unit, lo, hi)


def _environment(v: Any, where: str) -> Environment:
    f = _section(
        v,
        where,
        {
            "path_loss": (_path_loss, Environment.path_loss),
            "shadowing": (_shadowing, Environment.shadowing),
            "fading": (
                lambda x, w: Fading(
                    **_section(
                        x,
                        w,
                        {
                            "rician_k_db_fixed": (
                                lambda y, ww: _number(y, ww, "dB", -40, 40),
                                Fading.rician_k_db_fixed,
                            ),
                            "rician_k_db_mobile": (
                                lambda y, ww: _number(y, ww, "dB", -40, 40),
                                Fading.rician_k_db_mobile,
                            ),
                            "fixed_doppler_hz": (lambda y, ww: _number(y, ww, "Hz", 0, 100), Fading.fixed_doppler_hz),
                            "n_paths": (lambda y, ww: _integer(y, ww, 1, 64), Fading.n_paths),
                        },
                    )
                ),
                Environment.fading,
            ),
        },
    )
    return Environment(**f)


def _signals(v: Any, where: str) -> Signals:
    def mix(x: Any, w: str) -> tuple[tuple[str, float], ...]:
        if not isinstance(x, dict) or not x:
            raise ScenarioError(f"{w}: expected a mapping emission → weight over {', '.join(EMISSIONS)}, got {x!r:.80}")
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
            "carrier_offset_hz": (lambda x, w: _number(x, w, "Hz", 0, 1e6), Signals.carrier_offset_hz),
        },
    )
    return Signals(**f)


def _receiver_chain(v: Any, where: str) -> ReceiverChain:
    f = _section(
        v,
        where,
        {
            "sample_rate_hz": (
                lambda x, w: _number(x, w, "Hz", 1_000, 100e6, " (give the rate in Hz)"),
                ReceiverChain.sample_rate_hz,
            ),
            "window_samples": (lambda x, w: _integer(x, w, 64, 1 << 22), ReceiverChain.window_samples),
            "channel_bandwidth_hz": (lambda x, w: _number(x, w, "Hz", 100, 100e6), ReceiverChain.channel_bandwidth_hz),
            "full_scale_dbm": (lambda x, w: _number(x, w, "dBm", -150, 30), ReceiverChain.full_scale_dbm),
            "detection_snr_db": (lambda x, w: _number(x, w, "dB", -20, 60), ReceiverChain.detection_snr_db),
            "min_receivers": (lambda x, w: _integer(x, w, 1, 1000), ReceiverChain.min_receivers),
        },
    )
    return ReceiverChain(**f)


def _features(v: Any, where: str) -> FeatureSettings:
    f = _section(
        v,
        where,
        {
            "segment_samples": (lambda x, w: _integer(x, w, 16, 1 << 16), FeatureSettings.segment_samples),
            "psd_bins": (lambda x, w: _integer(x, w, 0, 4096), FeatureSettings.psd_bins),
            "noise_band_hz": (lambda x, w: _range(x, w, "Hz", 0, 50e6), FeatureSettings.noise_band_hz),
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
            "description": (lambda x, w: _text(x, w, MAX_DESCRIPTION_CHARS), Scenario.description),
            "frequency_hz": (
                lambda x, w: _number(x, w, "Hz", 30e6, 3e9, " (VHF/UHF; give the frequency in Hz, e.g. 145.0e6)"),
                _REQUIRED,
            ),
            "receivers": (_receivers, _REQUIRED),
            "area": (_area, Scenario.area),
            "transmitter": (_transmitter, Scenario.transmitter),
            "environment": (_environment, Scenario.environment),
            "signals": (_signals, Scenario.signals),
            "receiver_chain": (_receiver_chain, Scenario.receiver_chain),
            "features": (_features, Scenario.features),
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
    if ft.psd_bins and ft.segment_samples % ft.psd_bins:
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


def scenario_from_text(text: Any, origin: str) -> Scenario:
    """A scenario from YAML text of any origin (a file, a store attribute, a model's metadata), parsed as untrusted
    plain data; raises ScenarioError naming `origin` and the field."""
    data = load_plain_yaml(text, origin, ScenarioError, MAX_SCENARIO_CHARS)
    try:
        return scenario_from_dict(data)
    except ScenarioError as exc:
        raise ScenarioError(f"{origin}: {exc}") from None
