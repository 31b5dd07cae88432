"""Atomic file writes (a temp file in the target's folder, fsync, then rename over the target), new
files that never replace one, and locks that processes take turns on."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import MnistSoftmaxError

TEMP_SUFFIX = ".tmp"


def _cut(name: str, limit: int = 200) -> str:
    """The name cut to at most `limit` bytes: file names have at most 255, and temp files and
    numbered copies add to a name."""
    return os.fsdecode(os.fsencode(name)[:limit])


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new file beside `path`, named .<name>.<pid>-<random>.tmp, opened for writing.

    Created with mode 0o666 so the kernel applies the process umask itself (mkstemp makes 0600,
    and reading the umask means setting it, which is not thread-safe).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        # The name is cut so the temp file's name is no longer than a name the target could have.
        tmp = path.parent / f".{_cut(path.name)}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
        except OSError as e:  # a read-only or missing folder, say: the user asked for `path`, not the temp file
            raise OSError(e.errno, e.strerror, str(path)) from None
    raise FileExistsError(f"could not create a temporary file beside {path}")


def check_replaceable(path: str | os.PathLike, example: str = "") -> None:
    """MnistSoftmaxError if something other than a regular file (a device, a pipe, a folder) is at
    path: an atomic write renames its temp file over the name, so it would replace that thing, not
    write into it. example: a file name to suggest instead."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # nothing there (or nothing reachable): the write itself says what is wrong
    if not stat.S_ISREG(mode):
        such_as = f", such as {example}" if example else ""
        raise MnistSoftmaxError(f"{os.fspath(path)} exists and is not a regular file; give a file name{such_as}")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside `path`; on success it replaces `path`, on any error it is removed.

    Readers see either the old file or the complete new one, never a partial write. An OSError
    (a full disk, say) names `path`, not the temp file.
    """
    check_replaceable(path)
    path = Path(path)
    tmp = None
    try:
        fd, tmp = _create_temp(path)
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(e, OSError) and (e.filename is None or str(e.filename) == str(tmp)) and e.errno:
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike, pattern: str = ".*") -> list[Path]:
    """Remove the temp files in `folder` whose writer is no longer running (killed before it could
    clean up: SIGKILL, a power cut); returns them. The writer's pid is in the name (_create_temp).
    pattern narrows them by name (the temp suffix follows it): ".*.npz.*" for checkpoints only."""
    removed = []
    folder = Path(folder)
    for tmp in folder.glob(f"{pattern}{TEMP_SUFFIX}") if folder.is_dir() else []:
        if is_stale_temp(tmp):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def is_stale_temp(path: Path) -> bool:
    """Whether `path` is a temp file (_create_temp) whose writer is no longer running."""
    if not (path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX)):
        return False
    owner = path.name[: -len(TEMP_SUFFIX)].rsplit(".", 1)[-1].split("-", 1)[0]
    return owner.isdigit() and int(owner) != os.getpid() and not _alive(int(owner))


def write_new(folder: str | os.PathLike, stem: str, suffix: str, data: bytes) -> Path:
    """Write `data` to folder/<stem><suffix>, or <stem>-2<suffix>, -3, …: the first name not taken,
    never replacing a file (the complete file is linked into place, which fails if the name is
    taken, even by a file created a moment ago by another process). Returns the path written."""
    folder = Path(folder)
    if not stem or stem in (".", "..") or any(sep and sep in stem for sep in (os.sep, os.altsep, "\0")):
        raise ValueError(f"{stem!r} is not a file name: write_new writes only into the folder it is given")
    stem = _cut(stem)  # leave room for -<k> and the suffix
    fd, tmp = _create_temp(folder / f"{stem}{suffix}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        for k in range(1, 100_000):
            target = folder / f"{stem}{'' if k == 1 else f'-{k}'}{suffix}"
            try:
                os.link(tmp, target)
                return target
            except FileExistsError:
                continue
        raise FileExistsError(f"no free name for {stem}{suffix} in {folder}")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


class Locked(OSError):
    """exclusive(..., wait=False) found the lock held by another process."""


@contextlib.contextmanager
def exclusive(lock: str | os.PathLike, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive lock across processes while inside; the lock file is removed on the way out.

    wait=True takes turns with the other holders; wait=False raises Locked at once if another holds it.
    After each flock the lock file is checked to still be the one at `lock`: a process that
    locked a file which another has meanwhile removed tries again, so two never both hold it.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    fd = -1
    try:
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise Locked(errno.EWOULDBLOCK, "held by another process", str(lock)) from None
            with contextlib.suppress(FileNotFoundError):
                if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                    break
            os.close(fd)
            fd = -1
    except BaseException:  # Locked, or a signal: the lock is not left held by a file nobody has
        if fd >= 0:
            os.close(fd)
        raise
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)
