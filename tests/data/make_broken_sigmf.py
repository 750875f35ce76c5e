"""Write the corpus of broken SigMF collections under tests/data/broken_sigmf (seeded, byte-reproducible).

Each case folder holds one transmission (three nw-italy receivers, a tone well above the noise) with one
defect; cases.json lists, per case, the file and field the import error must name and a phrase of its
message. The folder `valid` has no defect. Run: python tests/data/make_broken_sigmf.py [OUT_DIR]
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from heimdall.datasets.sigmf_writer import write_collection, write_recording
from heimdall.scenario.builtin import load_scenario

SEED = 7
N_SAMPLES = 2048
RECEIVERS = ("giaveno", "torino", "coazze")
TX_LAT_LON = (45.05, 7.45)

# case → (file the error names (relative to the case folder), field, phrase of the message)
CASES: dict[str, tuple[str, str, str]] = {
    "missing_data_file": ("tx_torino.sigmf-data", "data", "not found"),
    "data_shorter_than_metadata": ("tx_torino.sigmf-data", "annotations[0]", "shorter than the metadata"),
    "partial_sample": ("tx_torino.sigmf-data", "data", "not a whole number"),
    "unknown_datatype": ("tx_torino.sigmf-meta", "global.core:datatype", "unsupported 'cf64_le'"),
    "zero_sample_rate": ("tx_torino.sigmf-meta", "global.core:sample_rate", "> 0"),
    "nan_samples": ("tx_torino.sigmf-data", "data", "non-finite"),
    "missing_geolocation": ("tx_torino.sigmf-meta", "global.core:geolocation", "missing"),
    "latitude_out_of_range": ("tx_torino.sigmf-meta", "global.core:geolocation.coordinates[1] (latitude)", "[-90, 90]"),
    "duplicate_receiver": ("tx_torino2.sigmf-meta", "global.heimdall:receiver_id", "appears twice"),
    "malformed_meta_json": ("tx_torino.sigmf-meta", "JSON", "malformed"),
    "malformed_collection_json": ("tx.sigmf-collection", "JSON", "malformed"),
    "missing_frequency": ("tx_torino.sigmf-meta", "captures[0].core:frequency", "missing"),
    "frequency_off_channel": ("tx_torino.sigmf-meta", "captures[0].core:frequency", "needs"),
    "meta_changed_after_collection": ("tx.sigmf-collection", "collection.core:streams[1].hash", "does not match"),
    "transmitter_out_of_range": (
        "tx.sigmf-collection",
        "collection.heimdall:transmitter.coordinates[0] (longitude)",
        "[-180, 180]",
    ),
    "window_too_short": ("tx_torino.sigmf-data", "data", "needs"),
    "data_changed_after_meta": ("tx_torino.sigmf-meta", "global.core:sha512", "does not match"),
}


def _write_case(folder: Path, rng: np.random.Generator, datatype: str = "ci16_le", n: int = N_SAMPLES) -> None:
    sc = load_scenario("nw-italy")
    ch = sc.receiver_chain
    t = np.arange(n) / ch.sample_rate_hz
    metas = []
    for rx in (r for r in sc.receivers if r.id in RECEIVERS):
        amp = 10 ** (rng.uniform(-95, -80) / 20) / 10 ** (ch.full_scale_dbm / 20)
        iq = amp * np.exp(2j * np.pi * 1_500 * t) + 3e-4 * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
        metas.append(
            write_recording(
                folder,
                f"tx_{rx.id}",
                iq.astype(np.complex64),
                datatype=datatype,
                sample_rate_hz=ch.sample_rate_hz,
                frequency_hz=sc.frequency_hz,
                datetime="2026-05-01T12:00:00.000000Z",
                lat=rx.lat,
                lon=rx.lon,
                alt_m=None,
                receiver_id=rx.id,
                power_calibration_dbm=ch.full_scale_dbm,
            )
        )
    write_collection(folder, "tx", metas, TX_LAT_LON)


def _edit_meta(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc, indent=1))


def _rewrite_collection(folder: Path) -> None:
    """Re-write the collection so its hashes match edited metadata (the defect is in the recording)."""
    write_collection(folder, "tx", sorted(folder.glob("*.sigmf-meta")), TX_LAT_LON)


def make(out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    rng = np.random.default_rng(SEED)
    _write_case(out / "valid", rng)
    for case in CASES:
        d = out / case
        _write_case(d, rng, datatype="cf32_le" if case == "nan_samples" else "ci16_le")
        meta, data = d / "tx_torino.sigmf-meta", d / "tx_torino.sigmf-data"
        if case == "missing_data_file":
            data.unlink()
        elif case == "data_shorter_than_metadata":
            data.write_bytes(data.read_bytes()[: 4 * 1000])
        elif case == "partial_sample":
            data.write_bytes(data.read_bytes()[:-1])
            _edit_meta(meta, lambda m: m.update({"annotations": []}))
        elif case == "unknown_datatype":
            _edit_meta(meta, lambda m: m["global"].update({"core:datatype": "cf64_le"}))
        elif case == "zero_sample_rate":
            _edit_meta(meta, lambda m: m["global"].update({"core:sample_rate": 0}))
        elif case == "nan_samples":
            x = np.fromfile(data, "<f4")
            x[2 * 100] = np.nan
            x.tofile(data)
            _edit_meta(meta, lambda m: m["global"].pop("core:sha512"))
        elif case == "missing_geolocation":
            _edit_meta(meta, lambda m: m["global"].pop("core:geolocation"))
        elif case == "latitude_out_of_range":
            _edit_meta(meta, lambda m: m["global"]["core:geolocation"]["coordinates"].__setitem__(1, 95.0))
        elif case == "duplicate_receiver":
            shutil.copy(meta, d / "tx_torino2.sigmf-meta")
            shutil.copy(data, d / "tx_torino2.sigmf-data")
        elif case == "malformed_meta_json":
            meta.write_text(meta.read_text()[:-20])
        elif case == "malformed_collection_json":
            p = d / "tx.sigmf-collection"
            p.write_text(p.read_text().replace('"core:streams":', '"core:streams"', 1))
        elif case == "missing_frequency":
            _edit_meta(meta, lambda m: m["captures"][0].pop("core:frequency"))
        elif case == "frequency_off_channel":
            _edit_meta(meta, lambda m: m["captures"][0].update({"core:frequency": 145_100_000.0}))
        elif case == "meta_changed_after_collection":
            _edit_meta(meta, lambda m: m["global"].update({"core:description": "edited"}))
            continue  # the collection keeps the old hash
        elif case == "data_changed_after_meta":
            x = np.fromfile(data, "<i2")
            x[200] += 1
            x.tofile(data)
        elif case == "window_too_short":
            data.write_bytes(data.read_bytes()[: 4 * 1000])
            _edit_meta(meta, lambda m: m["annotations"][0].update({"core:sample_count": 1000}))
        elif case == "transmitter_out_of_range":
            p = d / "tx.sigmf-collection"
            doc = json.loads(p.read_text())
            doc["collection"]["heimdall:transmitter"]["coordinates"][0] = 200.0
            p.write_text(json.dumps(doc, indent=1))
            continue
        if case != "malformed_collection_json":
            _rewrite_collection(d)
    (out / "cases.json").write_text(json.dumps({k: list(v) for k, v in CASES.items()}, indent=1) + "\n")


if __name__ == "__main__":
    make(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "broken_sigmf")
