"""Atomic writes: permissions as open() gives them, and a rename that survives a power loss."""

import os
import stat

from heimdall.atomic import atomic_write_text


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_new_files_get_the_permissions_open_gives(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "atomic.txt", "x")
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "atomic.txt") == _mode(tmp_path / "plain.txt") == 0o640


def test_a_replaced_file_keeps_its_permissions(tmp_path):
    path = tmp_path / "shared.txt"
    path.write_text("old")
    path.chmod(0o604)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o604
    assert [p.name for p in tmp_path.iterdir()] == ["shared.txt"]  # no temporary left


def test_the_file_then_its_folder_are_fsynced(tmp_path, fsynced):
    atomic_write_text(tmp_path / "a.txt", "x")
    assert len(fsynced) == 2
    assert os.path.basename(fsynced[0]).startswith(".a.txt.")  # the content, before the rename
    assert fsynced[1] == str(tmp_path)  # the rename
