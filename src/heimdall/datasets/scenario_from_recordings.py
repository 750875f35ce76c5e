"""A scenario built from SigMF recordings or a power-reading table, for `heimdall import` without --scenario: a network
that is not built in needs no YAML written first.

From the data: the channel (the most common `core:frequency`), the sample rate (the most common), the window (the
shortest recording, at most MAX_WINDOW_SAMPLES), and the receivers (one per receiver id, else per position, at
the first recording's geolocation). Everything else keeps the scenario defaults, scaled to the sample rate where it
must lie inside the band (channel bandwidth, noise band).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from heimdall.datasets.power_table import PowerTable
from heimdall.datasets.sigmf_files import Recording, find_collections, read_collection
from heimdall.errors import RecordingError, ScenarioError
from heimdall.geo import LocalFrame
from heimdall.scenario.domain import MAX_RECEIVERS, FeatureSettings, ReceiverChain, Scenario
from heimdall.scenario.schema import scenario_from_dict

MAX_WINDOW_SAMPLES = 1 << 16
SAME_PLACE_M = 100.0  # recordings without a receiver id this close together are one receiver


def scenario_from_recordings(root: str | Path, antenna_height_m: float, name: str | None = None) -> Scenario:
    """The scenario of the SigMF collections under `root` (invalid collections are left to the importer to report);
    receivers get `antenna_height_m` above terrain. Raises ScenarioError naming `root` when nothing fits."""
    root = Path(root)
    recordings: list[Recording] = []
    problems: list[str] = []
    for path in find_collections(root):
        try:
            recordings.extend(read_collection(path, root).recordings)
        except RecordingError as exc:
            problems.append(str(exc))
    if not recordings:
        raise ScenarioError(
            f"{root}: no readable SigMF collection to build a scenario from ({len(problems)} invalid"
            + (f", e.g. {problems[0][:300]}" if problems else "")
            + "); give --scenario"
        )
    frequency_hz = Counter(r.frequency_hz for r in recordings).most_common(1)[0][0]
    sample_rate_hz = Counter(r.sample_rate_hz for r in recordings).most_common(1)[0][0]
    window = min(MAX_WINDOW_SAMPLES, min(r.n_samples for r in recordings))
    default_chain, default_features = ReceiverChain(), FeatureSettings()
    scale = sample_rate_hz / default_chain.sample_rate_hz
    bandwidth_hz = min(default_chain.channel_bandwidth_hz, sample_rate_hz / 3)
    segment = min(default_features.segment_samples, window)
    receivers = _receivers(recordings, antenna_height_m, str(root))
    return scenario_from_dict(
        {
            "name": name or _safe_name(root.name),
            "description": f"built by heimdall import from the recordings in {root.name}",
            "frequency_hz": frequency_hz,
            "receivers": receivers,
            "receiver_chain": {
                "sample_rate_hz": sample_rate_hz,
                "window_samples": window,
                "channel_bandwidth_hz": bandwidth_hz,
                "min_receivers": min(default_chain.min_receivers, len(receivers)),
            },
            "features": {
                "segment_samples": segment,
                "psd_bins": min(default_features.psd_bins, segment),
                "noise_band_hz": [v * scale for v in default_features.noise_band_hz],
            },
        }
    )


def _receivers(recordings: list, antenna_height_m: float, where: str) -> list[dict]:
    """One receiver per id (or per place, for recordings without an id), in the order first seen."""
    frame = LocalFrame(recordings[0].lat, recordings[0].lon)
    found: dict[str, dict] = {}
    for r in recordings:
        key = r.receiver_id
        if key is None:
            east, north = frame.to_local(r.lat, r.lon)
            key = next(
                (
                    k
                    for k, v in found.items()
                    if v["anonymous"]
                    and abs(v["east_m"] - east) < SAME_PLACE_M
                    and abs(v["north_m"] - north) < SAME_PLACE_M
                ),
                f"rx-{len(found) + 1}",
            )
        if key not in found:
            east, north = frame.to_local(r.lat, r.lon)
            found[key] = {
                "lat": r.lat,
                "lon": r.lon,
                "east_m": east,
                "north_m": north,
                "anonymous": r.receiver_id is None,
            }
        if len(found) > MAX_RECEIVERS:
            raise ScenarioError(f"{where}: more than {MAX_RECEIVERS} receivers in the recordings")
    return [
        {"id": key, "lat": v["lat"], "lon": v["lon"], "antenna_height_m": antenna_height_m} for key, v in found.items()
    ]


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:80] or "imported"


def scenario_from_table(table: PowerTable, antenna_height_m: float, name: str | None = None) -> Scenario:
    """The scenario of a power-reading table: its receivers that the rows place (receiver_lat, receiver_lon; in the
    order first seen), the most common frequency_hz, and no spectral features (psd_bins 0). Raises ScenarioError
    naming the table when it gives no frequency or places fewer than two receivers."""
    import pandas as pd

    ok = ~table.bad & np.isfinite(table.numbers["receiver_lat"])
    ids, first = np.unique(table.receiver[ok].astype(str), return_index=True)
    at = np.flatnonzero(ok)[np.sort(first)]
    frequencies = pd.Series(table.numbers["frequency_hz"]).dropna()
    if frequencies.empty:
        raise ScenarioError(f"{table.path}: no frequency_hz in the table to build a scenario from; give --scenario")
    receivers = [
        {
            "id": str(table.receiver[i]),
            "lat": float(table.numbers["receiver_lat"][i]),
            "lon": float(table.numbers["receiver_lon"][i]),
            "antenna_height_m": antenna_height_m,
        }
        for i in at.tolist()
    ]
    if len(ids) > MAX_RECEIVERS:
        raise ScenarioError(f"{table.path}: more than {MAX_RECEIVERS} receivers in the table")
    return scenario_from_dict(
        {
            "name": name or _safe_name(table.path.stem),
            "description": f"built by heimdall import from the power readings in {table.path.name}",
            "frequency_hz": float(frequencies.mode().iloc[0]),
            "receivers": receivers,
            "receiver_chain": {"min_receivers": min(ReceiverChain().min_receivers, max(1, len(receivers)))},
            "features": {"psd_bins": 0},
        }
    )
