"""Atomic writes: the file appears whole or not at all, with the usual permissions, and errors name it."""

import errno
import os

import pytest

from mnist_softmax import fileio
from mnist_softmax.fileio import atomic_open, atomic_write_text


def test_permissions_follow_the_umask_without_touching_it(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
        assert os.umask(0o027) == 0o027  # still what it was set to
    finally:
        os.umask(old)


def test_the_umask_is_never_set_even_for_an_instant(tmp_path, monkeypatch):
    """Reading the umask means setting it; meanwhile another thread (conv extraction runs two)
    would create world-writable files. The kernel applies it to a file created with 0o666 instead."""

    def no_umask(mask):
        raise AssertionError("os.umask called")

    monkeypatch.setattr(fileio.os, "umask", no_umask)
    atomic_write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").read_text() == "x"


def test_an_error_names_the_target_and_leaves_nothing(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full)
    with pytest.raises(OSError) as e, atomic_open(tmp_path / "model.npz") as f:
        f.write(b"abc")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "model.npz")
    assert list(tmp_path.iterdir()) == []


def test_the_old_file_stays_until_the_new_one_is_complete(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target, "w") as f:
        f.write("half")
        assert target.read_text() == "old"
        raise RuntimeError
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["t.txt"]
