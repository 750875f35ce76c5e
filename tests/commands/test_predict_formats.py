"""`heimdall predict --format geojson|kml`: the CSV's positions with their 50 % and 95 % ellipses, or, with a radio
map, the JSON answer's regions and modes."""

import csv
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from heimdall.cli import main
from heimdall.geo import LocalFrame
from serve_bodies import sigmf_collection


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
    points = [f for f in features if f["properties"]["kind"] == "estimate"]
    regions = {
        p: [f for f in features if f["properties"]["kind"] == "region" and f["properties"]["probability"] == p]
        for p in (0.5, 0.95)
    }
    assert len(points) == len(regions[0.5]) == len(regions[0.95]) == len(rows) == 150
    assert len(features) == 3 * 150  # no modes without a radio map
    assert all(f["properties"]["shape"] == "ellipse" for f in regions[0.95] + regions[0.5])
    kml = _kml_folders(tmp_path / "p.kml")
    assert [name for name, _ in kml] == [r["transmission"] for r in rows]
    for i in (0, 77, 149):
        row, point = rows[i], points[i]
        assert point["properties"]["transmission"] == row["transmission"]
        lon, lat = point["geometry"]["coordinates"]
        assert (lat, lon) == pytest.approx((float(row["lat"]), float(row["lon"])), abs=2e-6)
        placemarks = kml[i][1]
        assert [p["kind"] for p in placemarks] == ["estimate", "region", "region"]
        assert placemarks[0]["geometry"] == [pytest.approx([lon, lat], abs=1e-6)]
        frame = LocalFrame(lat, lon)
        semi_axes_95 = float(row["semi_major_95_m"]) * float(row["semi_minor_95_m"])
        for probability, placemark in zip((0.5, 0.95), placemarks[1:], strict=True):
            region = regions[probability][i]
            assert region["properties"]["transmission"] == row["transmission"]
            ring = np.array(region["geometry"]["coordinates"][0])[:, ::-1]  # (lat, lon)
            assert (ring[0] == ring[-1]).all()
            # the k of a 2-D Gaussian region holding p is sqrt(-2 ln(1 - p)): the area scales with -ln(1 - p)
            expected = np.pi * semi_axes_95 * np.log(1 - probability) / np.log(1 - 0.95)
            assert _area_m2(ring, frame) == pytest.approx(expected, rel=0.01)
            assert placemark["probability"] == str(probability)
            assert len(placemark["geometry"]) == 1 and len(placemark["geometry"][0]) == 1  # one ring, no holes
            kml_ring = np.array(placemark["geometry"][0][0])[:, ::-1]
            assert np.abs(kml_ring - ring).max() < 1e-6


KML = {"k": "http://www.opengis.net/kml/2.2"}


def _kml_coordinates(element):
    return [[float(v) for v in xy.split(",")] for xy in element.text.split()]


def _kml_folders(path):
    """The KML file read back: [(folder name, [placemark]), ...]; a placemark is its ExtendedData as a dict plus
    `geometry`: a Point's [[lon, lat]], or its polygons, each [outer ring, *holes] of [lon, lat] vertices."""
    folders = []
    for folder in ET.parse(path).getroot().iterfind(".//k:Folder", KML):
        placemarks = []
        for placemark in folder.iterfind("k:Placemark", KML):
            data = {d.get("name"): d.find("k:value", KML).text for d in placemark.iterfind(".//k:Data", KML)}
            point = placemark.find("k:Point/k:coordinates", KML)
            if point is not None:
                data["geometry"] = _kml_coordinates(point)
            else:
                data["geometry"] = [
                    [_kml_coordinates(polygon.find("k:outerBoundaryIs/k:LinearRing/k:coordinates", KML))]
                    + [
                        _kml_coordinates(c)
                        for c in polygon.iterfind("k:innerBoundaryIs/k:LinearRing/k:coordinates", KML)
                    ]
                    for polygon in placemark.iterfind(".//k:Polygon", KML)
                ]
            placemarks.append(data)
        folders.append((folder.find("k:name", KML).text, placemarks))
    return folders


def _polygons(geometry):
    """A GeoJSON Polygon or MultiPolygon as a list of polygons, each [outer ring, *holes]."""
    return [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]


def test_with_a_radio_map_geojson_and_kml_hold_the_answers_regions_and_modes(map_model_file, tiny_store, tmp_path):
    base = ["predict", str(tiny_store), "--model-file", str(map_model_file), "--quiet"]
    for fmt in ("json", "geojson", "kml"):
        assert main([*base, "--format", fmt, "--out", str(tmp_path / f"p.{fmt}")]) == 0
    answers = json.loads((tmp_path / "p.json").read_text())
    features = json.loads((tmp_path / "p.geojson").read_text())["features"]
    kml = _kml_folders(tmp_path / "p.kml")
    assert len(answers) == len(kml) == 150 and all(a["map"] == "used" for a in answers)
    by_transmission = {}
    for f in features:
        by_transmission.setdefault(f["properties"]["transmission"], []).append(f)
    assert list(by_transmission) == [a["transmission"] for a in answers] == [name for name, _ in kml]
    several = 0
    for answer, (name, placemarks) in zip(answers, kml, strict=True):
        mine = by_transmission[name]
        assert [f["properties"]["kind"] for f in mine] == ["estimate", "region", "region"] + ["mode"] * len(
            answer["modes"]
        )
        estimate, r50, r95, *modes = mine
        assert estimate["geometry"]["coordinates"] == pytest.approx([answer["lon"], answer["lat"]], abs=1e-7)
        for region, key in ((r50, "0.5"), (r95, "0.95")):
            assert region["geometry"] == answer["regions"][key]  # the service's regions, exactly
            assert region["properties"] == {
                "transmission": name,
                "kind": "region",
                "probability": float(key),
                "shape": "hpd_region",
            }
        for rank, (mode, expected) in enumerate(zip(modes, answer["modes"], strict=True), start=1):
            assert mode["geometry"]["coordinates"] == [expected["lon"], expected["lat"]]
            assert mode["properties"]["probability"] == expected["probability"] and mode["properties"]["rank"] == rank
        # the KML holds the same: estimate, both regions (every polygon and hole), the modes in order
        assert [p["kind"] for p in placemarks] == [f["properties"]["kind"] for f in mine]
        assert placemarks[0]["geometry"] == [pytest.approx([answer["lon"], answer["lat"]], abs=1e-7)]
        for placemark, key in zip(placemarks[1:3], ("0.5", "0.95"), strict=True):
            assert placemark["probability"] == key and placemark["shape"] == "hpd_region"
            expected = _polygons(answer["regions"][key])
            assert [[len(ring) for ring in poly] for poly in placemark["geometry"]] == [
                [len(ring) for ring in poly] for poly in expected
            ]
            for drawn, poly in zip(placemark["geometry"], expected, strict=True):
                for ring_kml, ring in zip(drawn, poly, strict=True):
                    assert np.abs(np.array(ring_kml) - np.array(ring)).max() < 1e-9
        for placemark, expected in zip(placemarks[3:], answer["modes"], strict=True):
            assert placemark["geometry"] == [pytest.approx([expected["lon"], expected["lat"]], abs=1e-9)]
            assert float(placemark["probability"]) == expected["probability"]
        several += len(_polygons(answer["regions"]["0.95"])) > 1
    assert several > 0  # multi-part regions (MultiPolygon / MultiGeometry) were among those compared


def test_an_unknown_format_is_refused(model_file, tiny_store, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(tiny_store), "--model-file", str(model_file), "--format", "shp"])
    assert exit_info.value.code == 2 and "invalid choice: 'shp'" in capsys.readouterr().err


def test_json_answers_report_each_receiver_as_the_service_does(model_file, tiny_store, tmp_path):
    """`receivers`: per recording receiver its id, SNR (0.01 dB) and whether it heard (SNR ≥ the threshold)."""
    import h5py

    from heimdall.features import FeatureParams, heard
    from heimdall.scenario.schema import scenario_from_text

    out = tmp_path / "p.json"
    assert main(["predict", str(tiny_store), "--model-file", str(model_file), "--quiet", "--out", str(out)]) == 0
    answers = json.loads(out.read_text())
    with h5py.File(tiny_store / "test.h5") as f:
        params = FeatureParams.from_scenario(scenario_from_text(f.attrs["scenario_yaml"], "test.h5"))
        snr = f["features"][..., params.snr_index]
        present = f["present"][...] > 0 if "present" in f else np.ones(snr.shape, bool)
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in f["receivers/id"][...]]
    assert len(answers) == len(snr)
    for answer, row, rec in zip(answers, snr, present, strict=True):
        expected_ids = [i for i, p in zip(ids, rec, strict=True) if p]
        assert [r["id"] for r in answer["receivers"]] == expected_ids
        assert [r["snr_db"] for r in answer["receivers"]] == pytest.approx(row[rec], abs=0.006)
        assert [r["heard"] for r in answer["receivers"]] == list(heard(row[rec], params))


HOSTILE_NAME = '=HYPERLINK("evil")\x01\x0b\x1f<&>'  # a formula for spreadsheets, control characters for XML


@pytest.fixture(scope="module")
def hostile_collection(store_rows, tiny_store, tmp_path_factory):
    """Test transmission 0 as a SigMF collection whose file name is a spreadsheet formula with control characters."""
    import h5py

    with h5py.File(tiny_store / "test.h5") as f:
        lat_lon = np.stack([f["receivers/lat"][...], f["receivers/lon"][...]], -1)
    return sigmf_collection(tmp_path_factory.mktemp("hostile"), HOSTILE_NAME, store_rows, 0, lat_lon)


def test_a_collection_named_like_a_formula_is_a_text_cell_in_the_csv(model_file, hostile_collection, tmp_path):
    out = tmp_path / "p.csv"
    args = ["predict", str(hostile_collection), "--model-file", str(model_file), "--quiet", "--out", str(out)]
    assert main(args) == 0
    (row,) = list(csv.DictReader(out.open(newline="")))
    assert row["transmission"] == "'" + HOSTILE_NAME  # text to a spreadsheet, the name still readable


def test_control_characters_in_a_collection_name_leave_the_kml_well_formed(model_file, hostile_collection, tmp_path):
    out = tmp_path / "p.kml"
    args = ["predict", str(hostile_collection), "--model-file", str(model_file), "--quiet", "--out", str(out)]
    assert main(args) == 0
    ((name, placemarks),) = _kml_folders(out)  # well-formed XML (ET.parse raises otherwise)
    assert name == '=HYPERLINK("evil")\ufffd\ufffd\ufffd<&>'  # what XML cannot hold shown as U+FFFD, the rest kept
    assert [p["kind"] for p in placemarks] == ["estimate", "region", "region"]
