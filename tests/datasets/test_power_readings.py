"""Power-reading tables in: CSV and JSON Lines into a store (present, heard, censored, calibrated as the table said),
every bad row named by line and column with nothing written, receivers at one site, a tiny training on an imported
table, and `predict` answering a table per transmission id."""

import csv
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from heimdall.cli import main
from heimdall.datasets.loader import StoreDataset
from heimdall.datasets.power_import import import_table
from heimdall.datasets.spec import ImportOptions
from heimdall.errors import RecordingError
from tiny import tiny_train_args

COLUMNS = [
    "transmission",
    "time",
    "receiver",
    "receiver_lat",
    "receiver_lon",
    "power_dbm",
    "power_db",
    "noise_dbm",
    "snr_db",
    "floor_dbm",
    "floor_db",
    "status",
    "lat",
    "lon",
    "frequency_hz",
]
# a: calibrated with a floor; b: noise given; c: uncalibrated dB on the same roof as b; d: not recording in t1
T0 = "2026-05-01T12:00:00Z"
ROWS = [
    ["t1", T0, "a", "45.0", "7.0", "-80", "", "", "", "-110", "", "heard", "45.01", "7.01", "433e6"],
    ["t1", T0, "b", "45.02", "7.0", "-95", "", "-120", "", "", "", "", "45.01", "7.01", "433e6"],
    ["t1", "2026-05-01T12:00:01Z", "c", "45.02", "7.0", "", "-60", "", "", "", "-70", "not_heard", "45.01", "7.01", ""],
    ["t1", T0, "d", "45.0", "7.03", "", "", "", "", "", "", "not_recording", "45.01", "7.01", ""],
    ["t2", "1777636800", "a", "", "", "-85", "", "", "12", "", "", "", "", "", ""],
    ["t2", "1777636800", "b", "", "", "-130", "", "", "", "-125", "", "heard", "", "", ""],
    ["t2", "1777636800", "c", "", "", "", "-40", "", "", "", "", "", "", "", ""],
]
# what the store holds per transmission: features [R, 3] (power, noise, SNR), present [R], heard [R]
EXPECTED = {
    "t1": (
        [[-80, -110, 30], [-95, -120, 25], [-70, -70, 0], [0, 0, 0]],  # c censored at its floor; d absent
        [True, True, True, False],
        [True, True, False, False],
    ),
    "t2": (
        [[-85, -97, 12], [-125, -125, 0], [-40, -70, 30]],  # b below its floor: censored there; c: its floor as noise
        [True, True, True, False],
        [True, False, True, False],
    ),
}


def write_table(path: Path, rows: list[list[str]], columns: list[str] = COLUMNS) -> Path:
    """rows as CSV (by the suffix .csv) or JSON Lines (numbers as numbers, empty cells left out)."""
    if path.suffix == ".csv":
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(columns)
            w.writerows(rows)
        return path
    lines = []
    for row in rows:
        obj = {}
        for key, cell in zip(columns, row, strict=True):
            if cell != "":
                try:
                    obj[key] = float(cell) if key not in ("transmission", "receiver", "status", "time") else cell
                except ValueError:
                    obj[key] = cell
        lines.append(json.dumps(obj))
    path.write_text("\n".join(lines) + "\n")
    return path


def stored(out: Path) -> dict[str, tuple]:
    """Per transmission id: (features, present, mask) of every split file in `out`."""
    found = {}
    for f in sorted(out.glob("*.h5")):
        with h5py.File(f) as h:
            for i, name in enumerate(h["meta/collection"].asstr()[...]):
                found[name] = (h["features"][i], h["present"][i], h["mask"][i])
    return found


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_table_imports_as_the_table_says(tmp_path, suffix):
    table = write_table(tmp_path / f"readings{suffix}", ROWS)
    out = tmp_path / "store"
    assert main(["import", str(table), "--out", str(out), "--splits", "1,0,0", "--quiet"]) == 0
    got = stored(out)
    assert set(got) == {"t1", "t2"}
    for name, (features, present, heard) in EXPECTED.items():
        f, p, m = got[name]
        np.testing.assert_allclose(f[: len(features)], np.asarray(features, np.float32), atol=1e-4)
        assert p.tolist() == present and m.tolist() == heard
    with h5py.File(out / "train.h5") as h:
        assert json.loads(h.attrs["feature_params"])["psd_bins"] == 0
        assert json.loads(h.attrs["feature_names"]) == ["power_dbm", "noise_density_dbm_hz", "snr_db"]
        assert h["receivers/id"].asstr()[...].tolist() == ["a", "b", "c", "d"]
        assert h["receivers/power_calibrated"][...].tolist() == [True, True, False, True]  # c reads in dB
        assert h["meta/datetime"].asstr()[0] == "2026-05-01T12:00:00.000Z"
        np.testing.assert_allclose(h["tx_lat_lon"][0], [45.01, 7.01])
        # b and c share a roof: two receivers at one place
        en = np.stack([h["receivers/east_m"][...], h["receivers/north_m"][...]], -1)
        assert np.linalg.norm(en[1] - en[2]) < 1e-6
    with h5py.File(out / "unlabelled.h5") as h:  # t2 has no label
        assert np.isnan(h["tx_lat_lon"][...]).all()
    # the loader reads a store without spectral features (what training and evaluation read)
    arrays = StoreDataset([out / "train.h5"]).read_split()
    assert arrays.features.shape == (1, 4, 3)
    assert arrays.present.tolist() == [[1, 1, 1, 0]] and arrays.heard.tolist() == [[True, True, False, False]]
    assert (out / "scenario.yaml").is_file()


BAD = [
    # (what, row edit: index → {column: value}, column named)
    ("unknown receiver", {4: {"receiver": "zz"}}, "receiver", "unknown receiver 'zz'"),
    ("power above bounds", {0: {"power_dbm": "75"}}, "power_dbm", "outside [-200, 60]"),
    ("dB beyond a sane bound", {2: {"power_db": "1e6"}}, "power_db", "outside"),
    ("missing time", {1: {"time": ""}}, "time", "missing"),
    ("bad time", {1: {"time": "yesterday"}}, "time", "ISO 8601"),
    ("missing transmission id", {1: {"transmission": ""}}, "transmission", "missing"),
    ("missing receiver id", {1: {"receiver": ""}}, "receiver", "missing"),
    ("duplicate pair", {5: {"receiver": "a"}}, "receiver", "appears twice"),
    ("bad status", {0: {"status": "loud"}}, "status", "not one of"),
    ("unparsable number", {1: {"snr_db": "12 dB"}}, "snr_db", "expected a finite number"),
    ("heard without a power", {0: {"power_dbm": ""}}, "power_dbm", "needs its power"),
    ("dBm and dB in one row", {0: {"power_db": "-40"}}, "power_db", "not both"),
    ("receiver moved", {4: {"receiver_lat": "45.5", "receiver_lon": "7.0"}}, "receiver_lat", "earlier line"),
]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
@pytest.mark.parametrize("case,edits,column,message", BAD, ids=[b[0] for b in BAD])
def test_a_bad_row_is_named_by_line_and_column_and_nothing_is_written(tmp_path, suffix, case, edits, column, message):
    rows = [list(r) for r in ROWS]
    for i, change in edits.items():
        for key, value in change.items():
            rows[i][COLUMNS.index(key)] = value
    table = write_table(tmp_path / f"bad{suffix}", rows)
    out = tmp_path / "store"
    with pytest.raises(RecordingError) as info:
        import_table(table, out, None)
    line = min(edits) + (2 if suffix == ".csv" else 1)
    assert info.value.path == str(table)
    assert info.value.field == f"line {line}, column {column}", str(info.value)
    assert message in info.value.message
    assert not out.exists() or not any(out.iterdir()), "something was written"


def test_a_spreadsheet_csv_with_a_byte_order_mark_imports(tmp_path):
    table = write_table(tmp_path / "t.csv", ROWS)
    table.write_bytes(b"\xef\xbb\xbf" + table.read_bytes())
    summary, _ = import_table(table, tmp_path / "store", None)
    assert summary.n_rows == len(ROWS) and sum(summary.splits.values()) == 2


def test_mixed_units_within_one_receiver_are_refused(tmp_path):
    rows = [list(r) for r in ROWS]
    rows[6][COLUMNS.index("power_db")], rows[6][COLUMNS.index("power_dbm")] = "", "-40"  # c in dBm on line 8
    with pytest.raises(RecordingError, match=r"line 8, column power_dbm: receiver 'c' in dBm here but in dB on line 4"):
        import_table(write_table(tmp_path / "mixed.csv", rows), tmp_path / "store", None)
    assert not (tmp_path / "store").exists()


def test_skip_invalid_leaves_out_the_transmissions_of_bad_rows(tmp_path):
    rows = [list(r) for r in ROWS]
    rows[4][COLUMNS.index("power_dbm")] = "hot"  # t2 is bad
    out = tmp_path / "store"
    summary, _ = import_table(write_table(tmp_path / "t.csv", rows), out, None, ImportOptions(skip_invalid=True))
    assert set(stored(out)) == {"t1"}
    assert [(s.field, s.collection.endswith("transmission t2")) for s in summary.skipped] == [
        ("line 6, column power_dbm", True)
    ]


def test_a_table_whose_receivers_disagree_with_the_scenario_is_refused(tmp_path, nw_italy):
    rx = nw_italy.receivers
    rows = [
        ["t1", "0", rx[0].id, str(rx[0].lat + 0.05), str(rx[0].lon), "-80", "", "", "", "", "", "", "", "", ""],
        ["t1", "0", rx[1].id, "", "", "-90", "", "", "", "", "", "", "", "", ""],
    ]
    with pytest.raises(RecordingError, match=rf"line 2, column receiver_lat: receiver '{rx[0].id}' is \d+ m from"):
        import_table(write_table(tmp_path / "t.csv", rows), tmp_path / "store", nw_italy)
    assert not (tmp_path / "store").exists()


def test_oversized_tables_are_refused_unread(tmp_path, monkeypatch):
    import heimdall.datasets.power_table as power_table

    table = write_table(tmp_path / "t.csv", ROWS)
    monkeypatch.setattr(power_table, "MAX_TABLE_ROWS", 3)
    with pytest.raises(RecordingError, match="at most 3 rows"):
        import_table(table, tmp_path / "store", None)
    monkeypatch.setattr(power_table, "MAX_TABLE_BYTES", 100)
    with pytest.raises(RecordingError, match="at most 100"):
        import_table(table, tmp_path / "store", None)


def table_of_store(store: Path, split: str, path: Path, scenario, not_recording: float = 0.1) -> Path:
    """The transmissions of a simulated store's split as a power table: heard readings with their power and SNR,
    not heard at the receiver's floor (the lowest heard power), a random fraction not recording."""
    with h5py.File(store / f"{split}.h5") as h:
        feats, mask, lat_lon = h["features"][...], h["mask"][...], h["tx_lat_lon"][...]
        p = json.loads(h.attrs["feature_params"])["psd_bins"]
    power, snr = feats[..., p], feats[..., p + 2]
    rng = np.random.default_rng(3)
    off = rng.random(mask.shape) < not_recording
    floor = np.where(mask, power, np.inf).min(axis=0) - 1.0  # every heard reading above its receiver's floor
    rows = []
    for t in range(len(feats)):
        for r, rx in enumerate(scenario.receivers):
            status = "not_recording" if off[t, r] else "heard" if mask[t, r] else "not_heard"
            rows.append(
                [f"tx{t}", str(1_777_000_000 + t), rx.id, str(rx.lat), str(rx.lon)]
                + ([f"{power[t, r]:.3f}", "", "", f"{snr[t, r]:.3f}"] if status == "heard" else ["", "", "", ""])
                + [f"{floor[r]:.3f}" if np.isfinite(floor[r]) else "", "", status]
                + [f"{lat_lon[t, 0]:.7f}", f"{lat_lon[t, 1]:.7f}", str(scenario.frequency_hz)]
            )
    return write_table(path, rows)


@pytest.fixture(scope="module")
def power_store(tiny_store, nw_italy, tmp_path_factory):
    """tiny_store's training transmissions as a power table, imported with the scenario."""
    tmp = tmp_path_factory.mktemp("power")
    table = table_of_store(tiny_store, "train", tmp / "readings.csv", nw_italy)
    out = tmp / "store"
    args = ["import", str(table), "--scenario", "nw-italy", "--out", str(out), "--splits", "1,0,0", "--quiet"]
    assert main(args) == 0
    return tmp, table, out


def test_a_store_of_power_readings_trains_and_its_model_answers_the_table(power_store, tmp_path, monkeypatch):
    tmp, table, out = power_store
    monkeypatch.setenv("HEIMDALL_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = tmp_path / "train-store"
    shutil.copytree(out, store)
    run = tmp_path / "run"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(tiny_train_args(store, run, uri, "--localizer", "network", epochs=1)) == 0
    model = next(run.rglob("*.onnx"))
    answers = tmp_path / "answers.json"
    assert main(["predict", str(table), "--model-file", str(model), "--out", str(answers), "--quiet"]) == 0
    got = json.loads(answers.read_text())
    n_tx = len({row.split(",")[0] for row in table.read_text().splitlines()[1:]})
    assert len(got) == n_tx and len({a["transmission"] for a in got}) == n_tx
    assert all(np.isfinite([a["east_m"], a["north_m"]]).all() for a in got)


def test_a_network_with_spectral_features_answers_a_table_per_transmission(power_store, model_file, tmp_path):
    _, table, _ = power_store
    answers = tmp_path / "answers.csv"
    assert main(["predict", str(table), "--model-file", str(model_file), "--out", str(answers), "--quiet"]) == 0
    with answers.open() as f:
        rows = list(csv.DictReader(f))
    names = [row.split(",")[0] for row in table.read_text().splitlines()[1:]]
    assert [r["transmission"] for r in rows] == list(dict.fromkeys(names))
    assert all(np.isfinite(float(r["east_m"])) for r in rows)
