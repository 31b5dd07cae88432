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


@pytest.mark.parametrize("stem", ["../x", "a/b", "..", ".", "", "x\0y"])
def test_write_new_writes_only_into_its_folder(tmp_path, stem):
    folder = tmp_path / "inner"
    folder.mkdir()
    with pytest.raises(ValueError, match="is not a file name"):
        fileio.write_new(folder, stem, ".png", b"data")
    assert list(tmp_path.rglob("*")) == [folder]
    assert fileio.write_new(folder, "..x", ".png", b"data") == folder / "..x.png"  # dots inside a name are fine


def test_a_folder_that_takes_no_file_is_named_not_the_temp_file(tmp_path, monkeypatch):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(NotADirectoryError) as e:
        atomic_write_text(not_a_folder / "summary.json", "{}")
    assert e.value.filename == str(not_a_folder / "summary.json")
    real_open = os.open

    def read_only(path, flags, *args):  # as on a read-only mount, which root cannot write either
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(fileio.os, "open", read_only)
    for write in (lambda: atomic_write_text(tmp_path / "summary.json", "{}"),
                  lambda: fileio.write_new(tmp_path, "digit", ".png", b"x")):  # fmt: skip
        with pytest.raises(OSError, match="Read-only file system") as e:
            write()
        assert e.value.filename in (str(tmp_path / "summary.json"), str(tmp_path / "digit.png"))


def test_an_atomic_write_never_replaces_a_pipe_or_a_device(tmp_path):
    """The rename would swap the name over the pipe (or a device: /dev/null), not write into it:
    refused, naming the path, and nothing is left behind. (A pipe only here: were the guard gone, a
    device given to this test would be replaced.)"""
    import os
    import stat

    from mnist_softmax.errors import MnistSoftmaxError

    pipe = tmp_path / "out.png"
    os.mkfifo(pipe)
    with pytest.raises(MnistSoftmaxError, match=f"^{pipe} exists and is not a regular file; give a file name$"):
        fileio.atomic_write_bytes(pipe, b"data")
    assert stat.S_ISFIFO(os.stat(pipe).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
