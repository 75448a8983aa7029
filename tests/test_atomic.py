"""Atomic writes: the new content replaces the old in one step, with the permissions a plain write would give."""

from __future__ import annotations

import os
import stat

import pytest

from rl_core.atomic import atomic_write, write_bytes_atomic, write_text_atomic


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_rewritten_file_keeps_its_mode(tmp_path, umask_022):
    target = tmp_path / "local_results.csv"
    target.write_text("model,score\n")
    os.chmod(target, 0o644)
    write_text_atomic("model,score\nbirdnet_v2_4,0.9\n", target)
    assert target.read_text() == "model,score\nbirdnet_v2_4,0.9\n"
    assert mode_of(target) == 0o644

    os.chmod(target, 0o640)  # a mode the umask would not give: still kept
    write_bytes_atomic(b"x", target)
    assert mode_of(target) == 0o640


def test_new_file_gets_the_umask_default(tmp_path):
    old = os.umask(0o027)
    try:
        write_text_atomic("a", tmp_path / "new.txt")
        plain = tmp_path / "plain.txt"
        plain.write_text("a")  # what open() gives under the same umask
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "new.txt") == 0o640 == mode_of(plain)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, umask_022):
    target = tmp_path / "table.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(target, "w") as handle:
            handle.write("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]
