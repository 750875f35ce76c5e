"""`heimdall predict --format geojson|kml`: the CSV's positions, with the 95 % ellipse as a polygon."""

import csv
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from heimdall.cli import main
from heimdall.geo import LocalFrame


def _area_m2(ring_lat_lon, frame):
    en = frame.to_local(ring_lat_lon[:, 0], ring_lat_lon[:, 1])
    return 0.5 * abs(np.dot(en[:-1, 0], en[1:, 1]) - np.dot(en[1:, 0], en[:-1, 1]))


def test_geojson_and_kml_hold_the_csv_positions_and_95_percent_ellipses(model_file, tiny_store, tmp_path):
    base = ["predict", str(tiny_store), "--model-file", str(model_file), "--quiet"]
    assert main([*base, "--out", str(tmp_path / "p.csv")]) == 0
    assert main([*base, "--format", "geojson", "--out", str(tmp_path / "p.geojson")]) == 0
    assert main([*base, "--format", "kml", "--out", str(tmp_path / "p.kml")]) == 0
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    features = json.loads((tmp_path / "p.geojson").read_text())["features"]
    points = [f for f in features if f["geometry"]["type"] == "Point"]
    regions = [f for f in features if f["geometry"]["type"] == "Polygon"]
    assert len(points) == len(regions) == len(rows) == 150
    ns = {"k": "http://www.opengis.net/kml/2.2"}
    kml = ET.parse(tmp_path / "p.kml").getroot()
    kml_points = [p.text.split(",") for p in kml.iterfind(".//k:Point/k:coordinates", ns)]
    kml_rings = [p.text.split() for p in kml.iterfind(".//k:LinearRing/k:coordinates", ns)]
    assert len(kml_points) == len(kml_rings) == 150
    for i in (0, 77, 149):
        row, point, region = rows[i], points[i], regions[i]
        assert point["properties"]["transmission"] == region["properties"]["transmission"] == row["transmission"]
        lon, lat = point["geometry"]["coordinates"]
        assert (lat, lon) == pytest.approx((float(row["lat"]), float(row["lon"])), abs=2e-6)
        assert [float(v) for v in kml_points[i]] == pytest.approx([lon, lat], abs=1e-6)
        ring = np.array(region["geometry"]["coordinates"][0])[:, ::-1]  # (lat, lon)
        assert (ring[0] == ring[-1]).all()
        frame = LocalFrame(lat, lon)
        expected = np.pi * float(row["semi_major_95_m"]) * float(row["semi_minor_95_m"])
        assert _area_m2(ring, frame) == pytest.approx(expected, rel=0.01)
        kml_ring = np.array([[float(c) for c in p.split(",")][::-1] for p in kml_rings[i]])
        assert np.abs(kml_ring - ring).max() < 1e-6


def test_an_unknown_format_is_refused(model_file, tiny_store, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(tiny_store), "--model-file", str(model_file), "--format", "shp"])
    assert exit_info.value.code == 2 and "invalid choice: 'shp'" in capsys.readouterr().err
