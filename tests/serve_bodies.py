"""Request bodies for the HTTP service tests, made from `store_rows` (conftest.py), and checks of the answers."""

import base64

import numpy as np


def features_body(rows, k, drop=()):
    """Transmission k by full feature vectors, receivers by id (those in `drop` left out)."""
    return {
        "features": [
            {"id": rid, "features": rows["features"][k, i].tolist()}
            for i, rid in enumerate(rows["ids"])
            if i not in drop
        ]
    }


def power_body(rows, k):
    """Transmission k by measured in-band power only (valid for any model that knows the receiver ids)."""
    return {
        "features": [{"id": rid, "power_dbm": float(rows["features"][k, i, -3])} for i, rid in enumerate(rows["ids"])]
    }


def iq_body(rows, k, shift_hz=0.0):
    """Transmission k as raw cf32 IQ at 48 kHz; shift_hz > 0 moves the channel up in the recording (and the
    recording's declared centre down by as much, so that the channel stays at 145 MHz)."""
    t = np.arange(rows["iq"].shape[-1]) / 48000.0
    rotation = np.exp(2j * np.pi * shift_hz * t)
    return {
        "iq": [
            {
                "id": rid,
                "datatype": "cf32_le",
                "sample_rate_hz": 48000.0,
                "center_frequency_hz": 145e6 - shift_hz,
                "samples_base64": base64.b64encode((rows["iq"][k, i] * rotation).astype("<c8").tobytes()).decode(),
            }
            for i, rid in enumerate(rows["ids"])
        ]
    }


def sigmf_collection(folder, name, rows, k, lat_lon, datatype="ci16_le"):
    """Transmission k as a SigMF collection `name` in folder (one recording per receiver, at lat_lon [R, 2] with its
    heimdall:receiver_id, full scale −30 dBm); the collection's path."""
    from heimdall.datasets.sigmf_writer import write_collection, write_recording

    metas = [
        write_recording(
            folder,
            f"{name}_{rid}",
            rows["iq"][k, i],
            datatype=datatype,
            sample_rate_hz=48000.0,
            frequency_hz=145e6,
            datetime="2026-05-01T09:30:00.000Z",
            lat=float(lat_lon[i][0]),
            lon=float(lat_lon[i][1]),
            alt_m=10.0,
            receiver_id=rid,
            power_calibration_dbm=-30.0,
        )
        for i, rid in enumerate(rows["ids"])
    ]
    return write_collection(folder, name, metas, None)


def in_ring(lon, lat, ring):
    """Ray casting: (lon, lat) inside the closed ring [[lon, lat], ...]."""
    x, y = np.asarray(ring, float).T
    crosses = (y[:-1] > lat) != (y[1:] > lat)
    with np.errstate(divide="ignore", invalid="ignore"):
        at = x[:-1] + (lat - y[:-1]) * (x[1:] - x[:-1]) / (y[1:] - y[:-1])
    return bool(np.sum(crosses & (lon < at)) % 2)


def in_geometry(lon, lat, geometry):
    """Point in a GeoJSON Polygon or MultiPolygon (outer ring, then holes)."""
    assert geometry["type"] in ("Polygon", "MultiPolygon")
    polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    return any(in_ring(lon, lat, rings[0]) and not any(in_ring(lon, lat, h) for h in rings[1:]) for rings in polygons)
