"""SigMF from outside: crafted metadata, links out of the input folder, unbounded receiver tables and a fuzz
of collection and recording JSON. Every bad collection is one reported item naming its file and field."""

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import h5py
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heimdall.cli import main
from heimdall.datasets.importer import REPORT_NAME, import_collections
from heimdall.datasets.sigmf_writer import write_collection
from heimdall.datasets.spec import ImportOptions
from heimdall.errors import HeimdallError, NothingImported
from heimdall.scenario.domain import MAX_RECEIVERS

VALID = Path(__file__).parents[1] / "data" / "broken_sigmf" / "valid"
TX_LAT_LON = (45.05, 7.45)


def tree_digest(root: Path, skip: Path | None = None) -> str:
    """sha256 over every file's relative path, bytes and mtime (links as their target names), except under skip."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        h.update(p.relative_to(root).as_posix().encode())
        if p.is_symlink():
            h.update(os.readlink(p).encode())
        elif p.is_file():
            h.update(p.read_bytes())
            h.update(str(p.stat().st_mtime_ns).encode())
    return h.hexdigest()


def copy_valid(dst: Path) -> Path:
    """The corpus' valid transmission (three nw-italy receivers, labelled) in folder dst."""
    dst.mkdir(parents=True, exist_ok=True)
    for p in VALID.iterdir():
        shutil.copy(p, dst / p.name)
    return dst


def rehash(folder: Path) -> None:
    """Write the collection again so its stream hashes match the (edited) metadata."""
    write_collection(folder, "tx", sorted(folder.glob("*.sigmf-meta")), TX_LAT_LON)


def edit_text(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def _meta_edit(old, new):
    def craft(folder):
        edit_text(folder / "tx_torino.sigmf-meta", old, new)
        rehash(folder)

    return craft


def _too_many_streams(folder):
    p = folder / "tx.sigmf-collection"
    doc = json.loads(p.read_text())
    doc["collection"]["core:streams"] = [{"name": f"s{i}"} for i in range(MAX_RECEIVERS + 1)]
    p.write_text(json.dumps(doc))


def _huge_meta(folder):
    description = '"core:description": "' + "x" * 2_000_000 + '"'
    edit_text(folder / "tx_torino.sigmf-meta", '"core:description": ""', description)
    rehash(folder)


def _collection_edit(old, new):
    def craft(folder):
        edit_text(folder / "tx.sigmf-collection", old, new)

    return craft


SAMPLE_RATE = '"core:sample_rate": 48000.0'
CRAFTED = [
    (
        "400-digit sample rate",
        _meta_edit(SAMPLE_RATE, '"core:sample_rate": 1' + "0" * 400),
        "tx_torino.sigmf-meta",
        "global.core:sample_rate",
        "an integer of 401 digits",
    ),
    (
        "5000-digit sample rate",
        _meta_edit(SAMPLE_RATE, '"core:sample_rate": ' + "7" * 5000),
        "tx_torino.sigmf-meta",
        "global.core:sample_rate",
        "an integer of 5000 digits",
    ),
    (
        "integer beyond 2^63",
        _meta_edit(SAMPLE_RATE, '"core:sample_rate": 9999999999999999999'),
        "tx_torino.sigmf-meta",
        "global.core:sample_rate",
        "beyond ±2^63",
    ),
    (
        "sample rate of 1e300 Hz",
        _meta_edit(SAMPLE_RATE, '"core:sample_rate": 1e300'),
        "tx_torino.sigmf-meta",
        "global.core:sample_rate",
        "≤ 1e+10",
    ),
    (
        "nesting beyond the parser",
        _meta_edit('"annotations"', '"deep": ' + "[" * 100_000 + "]" * 100_000 + ', "annotations"'),
        "tx_torino.sigmf-meta",
        "JSON",
        "nested deeper than 32 levels",
    ),
    (
        "nesting beyond the limit",
        _meta_edit('"annotations"', '"deep": ' + "[" * 200 + "]" * 200 + ', "annotations"'),
        "tx_torino.sigmf-meta",
        "deep" + "[0]" * 32,
        "nested deeper than 32 levels",
    ),
    (
        "infinite sample count",
        _meta_edit('"core:sample_count": 2048', '"core:sample_count": Infinity'),
        "tx_torino.sigmf-meta",
        "annotations[0].core:sample_count",
        "not of type 'integer'",
    ),
    (
        "sample start beyond the data",
        _meta_edit('"core:sample_count": 2048', '"core:sample_count": 2048, "core:sample_start": 9000000000000000000'),
        "tx_torino.sigmf-data",
        "annotations[0]",
        "data shorter than the metadata",
    ),
    (
        "stream hash not text",
        _collection_edit('"hash": "', '"hash": {"a": 1}, "x": "'),
        "tx.sigmf-collection",
        "collection.core:streams[0].hash",
        "expected 128 hexadecimal digits",
    ),
    ("too many streams", _too_many_streams, "tx.sigmf-collection", "collection.core:streams", "1 to 256 recordings"),
    ("metadata of 2 MB", _huge_meta, "tx_torino.sigmf-meta", "file", "bytes; metadata files have at most 1048576"),
]


@pytest.mark.parametrize("case,craft,file,field,phrase", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_crafted_metadata_is_one_reported_item(case, craft, file, field, phrase, tmp_path, capsys):
    src = tmp_path / "in"
    copy_valid(src / "a")
    craft(copy_valid(src / "b"))
    before = tree_digest(src)
    out = tmp_path / "store"
    assert main(["import", "--scenario", "nw-italy", str(src), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{file}: {field}" in err and phrase in err and "Traceback" not in err, err[:500]
    assert not out.exists() or not list(out.glob("*.h5*"))
    assert main(["import", "--scenario", "nw-italy", str(src), "--out", str(out), "--quiet", "--skip-invalid"]) == 0
    report = json.loads((out / REPORT_NAME).read_text())
    assert sum(report["splits"].values()) == 1
    [skipped] = report["skipped"]
    assert Path(skipped["collection"]).parent.name == "b" and Path(skipped["file"]).name == file
    assert skipped["field"] == field and phrase in skipped["message"]
    assert tree_digest(src) == before


def test_links_out_of_the_input_folder_are_refused(tmp_path):
    outside = copy_valid(tmp_path / "outside")
    src = tmp_path / "in"
    copy_valid(src / "a")
    (src / "c1").mkdir()
    (src / "c1" / "tx.sigmf-collection").symlink_to(outside / "tx.sigmf-collection")
    c2 = copy_valid(src / "c2")
    (c2 / "tx_torino.sigmf-meta").unlink()
    (c2 / "tx_torino.sigmf-meta").symlink_to(outside / "tx_torino.sigmf-meta")
    c3 = copy_valid(src / "c3")
    (c3 / "tx_torino.sigmf-data").unlink()
    (c3 / "tx_torino.sigmf-data").symlink_to(outside / "tx_torino.sigmf-data")
    c4 = copy_valid(src / "c4")  # a link that stays inside the folder is fine
    (c4 / "tx_torino.sigmf-data").unlink()
    (c4 / "tx_torino.sigmf-data").symlink_to(src / "a" / "tx_torino.sigmf-data")
    s = import_collections(src, tmp_path / "store", load_nw_italy(), ImportOptions(skip_invalid=True))
    assert sum(s.splits.values()) == 2
    refused = {Path(k.collection).parent.name: (Path(k.file).name, k.field) for k in s.skipped}
    assert refused == {
        "c1": ("tx.sigmf-collection", "file"),
        "c2": ("tx_torino.sigmf-meta", "file"),
        "c3": ("tx_torino.sigmf-data", "data"),
    }
    assert all("a link leading out of the folder read" in k.message for k in s.skipped)


def load_nw_italy():
    from heimdall.scenario.builtin import load_scenario

    return load_scenario("nw-italy")


def test_when_nothing_is_imported_each_reason_is_reported(tmp_path, capsys):
    src = tmp_path / "in"
    _meta_edit(SAMPLE_RATE, '"core:sample_rate": 1' + "0" * 400)(copy_valid(src / "b"))
    _too_many_streams(copy_valid(src / "c"))
    out = tmp_path / "store"
    assert main(["import", "--scenario", "nw-italy", str(src), "--out", str(out), "--quiet", "--skip-invalid"]) == 2
    captured = capsys.readouterr()
    assert "no collection could be imported (2 invalid" in captured.err
    assert "skipped (invalid): 2" in captured.out
    assert "b/tx_torino.sigmf-meta: global.core:sample_rate: an integer of 401 digits" in captured.out
    assert "c/tx.sigmf-collection: collection.core:streams: expected a list of 1 to 256" in captured.out
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["splits"] == {} and len(report["skipped"]) == 2
    assert [p.name for p in out.iterdir()] == [REPORT_NAME]


def test_the_receiver_table_is_bounded(tmp_path):
    """Collections of three receivers each at unknown places: the table fills up to MAX_RECEIVERS, then the
    collections that would add more are skipped, each reported."""
    src = tmp_path / "in"
    n_collections = 90  # 270 new receivers; 7 known
    for c in range(n_collections):
        folder = copy_valid(src / f"c{c:03d}")
        for j, meta in enumerate(sorted(folder.glob("*.sigmf-meta"))):
            doc = json.loads(meta.read_text())
            del doc["global"]["heimdall:receiver_id"]
            doc["global"]["core:geolocation"]["coordinates"] = [6.0 + 0.02 * j, 43.0 + 0.01 * c]
            meta.write_text(json.dumps(doc))
        rehash(folder)
    s = import_collections(src, tmp_path / "store", load_nw_italy(), ImportOptions(skip_invalid=True))
    fit = (MAX_RECEIVERS - 7) // 3
    assert len(s.new_receivers) == 3 * fit and sum(s.splits.values()) == fit
    assert len(s.skipped) == n_collections - fit
    assert all("which is full (at most 256)" in k.message for k in s.skipped)
    with h5py.File(next((tmp_path / "store").glob("*.h5"))) as f:
        assert len(f["receivers/id"]) == 7 + 3 * fit


# --- fuzz ------------------------------------------------------------------------------------------------

KEYS = [
    "global",
    "captures",
    "annotations",
    "collection",
    "core:streams",
    "core:datatype",
    "core:sample_rate",
    "core:geolocation",
    "core:frequency",
    "core:sample_start",
    "core:sample_count",
    "core:sha512",
    "name",
    "hash",
    "type",
    "coordinates",
    "heimdall:receiver_id",
    "heimdall:transmitter",
    "core:trailing_bytes",
]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["ci16_le", "cf32_le", "Point", "tx_torino", "2026-05-01T12:00:00Z"])
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)
RAW = st.sampled_from(
    [
        "9" * 20,
        "-" + "9" * 400,
        "9" * 5000,
        "1e999",
        "[" * 40 + "]" * 40,
        "[" * 2000 + "]" * 2000,
        '{"a": ' * 100_000 + "1" + "}" * 100_000,
    ]
)


def _paths(value, prefix=()):
    """Every path (tuple of keys/indices) into a JSON value."""
    yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        yield from _paths(v, prefix + (k,))


RAW_MARK = "@@raw payload@@"


def _mutate(doc, data) -> str:
    """doc as JSON text with the value at a random path replaced (by JSON data or a raw payload: huge integers,
    deep nesting) or deleted."""
    path = data.draw(st.sampled_from(list(_paths(doc))[1:] + [()]))  # the whole document last: rarely drawn
    kind = data.draw(st.sampled_from(["raw", "replace", "delete"]))
    value = RAW_MARK if kind == "raw" else data.draw(JSON_VALUES)
    if not path:
        doc = value
    else:
        node = doc
        for k in path[:-1]:
            node = node[k]
        if kind == "delete" and isinstance(node, dict):
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return json.dumps(doc).replace(json.dumps(RAW_MARK), data.draw(RAW) if kind == "raw" else "")


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_collections_are_reported_never_a_traceback(nw_italy, data):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        src, out = root / "in", root / "out"
        copy_valid(src / "a")
        bad = copy_valid(src / "b")
        target = bad / data.draw(st.sampled_from(["tx.sigmf-collection", "tx_torino.sigmf-meta"]))
        target.write_text(_mutate(json.loads(target.read_text()), data))
        if target.suffix == ".sigmf-meta" and data.draw(st.booleans()):
            rehash(bad)  # else the stale hash of the collection refuses it
        before = tree_digest(root, skip=out)
        try:
            summary = import_collections(src, out, nw_italy, ImportOptions(skip_invalid=True))
        except NothingImported as exc:
            summary = exc.summary
        except HeimdallError as exc:
            pytest.fail(f"the whole import failed: {exc}")
        assert tree_digest(root, skip=out) == before, "the input or something outside the store changed"
        assert {p.name for p in out.iterdir()} <= {"train.h5", "val.h5", "test.h5", "unlabelled.h5", REPORT_NAME}
        reported = summary.skipped + summary.not_localisable
        assert sum(summary.splits.values()) + len(reported) == 2
        assert "a" not in {Path(k.collection).parent.name for k in reported}
        for k in reported:
            assert Path(k.file).parent == bad and k.field and k.message, k
        assert json.loads((out / REPORT_NAME).read_text())["skipped"] == [vars(k) for k in summary.skipped]
