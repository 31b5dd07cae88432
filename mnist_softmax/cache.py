"""The feature cache: the maps of all 70,000 MNIST images, for front ends slow to compute (conv).

One `<front end>-v<version>-<parameter hash>.npy` per parameter set (878 MB for conv), memory-mapped
when read, and beside it a `.json` that says what made it (front end, version, seed and settings)
and holds the CRC-32 of the train and test rows. A file whose sidecar is missing, or whose rows no
longer match their CRC (damage on disk), is not used: the features are computed again and stored
anew. Both files are written atomically. `mnist-softmax cache` lists what is cached; `--clear`
removes it.
"""

from __future__ import annotations

import contextlib
import json
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .fileio import TEMP_SUFFIX, atomic_open, atomic_write_text

PARTS = ("train", "test")


class Entry(NamedTuple):
    path: Path  # the .npy
    bytes: int  # of the .npy and its sidecar
    about: dict  # the sidecar's contents ({} when missing or unreadable)


def _crc(a: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B"))


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def load(path: Path, shapes: dict[str, tuple[int, int]]) -> dict[str, np.ndarray] | None:
    """{part: memory-mapped float32 rows} of a cache file whose shape and CRC-32s match, else None."""
    try:
        about = json.loads(_sidecar(path).read_text(encoding="utf-8"))
        F = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    n_train = shapes["train"][0]
    if F.dtype != np.float32 or F.shape != (n_train + shapes["test"][0], shapes["train"][1]):
        return None
    parts = {"train": F[:n_train], "test": F[n_train:]}
    crcs = about.get("crc32", {}) if isinstance(about, dict) else {}
    if any(crcs.get(part) != _crc(rows) for part, rows in parts.items()):
        return None
    return parts


def store(path: Path, parts: dict[str, np.ndarray], about: dict) -> None:
    """Write the rows of both parts as one .npy (without concatenating them), then the sidecar."""
    path.parent.mkdir(parents=True, exist_ok=True)
    F_train, F_test = (np.ascontiguousarray(parts[p], np.float32) for p in PARTS)
    header = {
        "descr": np.lib.format.dtype_to_descr(F_train.dtype),
        "fortran_order": False,
        "shape": (len(F_train) + len(F_test), F_train.shape[1]),
    }
    with atomic_open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(memoryview(F_train))
        f.write(memoryview(F_test))
    about = {**about, "rows": {"train": len(F_train), "test": len(F_test)}}
    about["crc32"] = {"train": _crc(F_train), "test": _crc(F_test)}
    atomic_write_text(_sidecar(path), json.dumps(about, indent=2) + "\n")


def entries(cache_dir: Path) -> list[Entry]:
    """What the cache holds, one Entry per .npy file, by name."""
    out = []
    for path in sorted(cache_dir.glob("*.npy")) if cache_dir.is_dir() else []:
        if not path.is_file():  # a dangling link, a FIFO: nothing any run wrote
            continue
        side = _sidecar(path)
        about = {}
        if side.is_file():
            with contextlib.suppress(OSError, ValueError):
                about = json.loads(side.read_text(encoding="utf-8"))
        size = path.stat().st_size + (side.stat().st_size if side.is_file() else 0)
        out.append(Entry(path, size, about if isinstance(about, dict) else {}))
    return out


def clear(cache_dir: Path) -> tuple[int, int]:
    """Remove every cache file, sidecar and leftover temp file; returns (files removed, bytes freed)."""
    n = freed = 0
    if not cache_dir.is_dir():
        return 0, 0
    for f in cache_dir.iterdir():
        if f.suffix in (".npy", ".json") or f.name.endswith(TEMP_SUFFIX):
            freed += f.stat().st_size if f.is_file() else 0
            f.unlink(missing_ok=True)
            n += 1
    return n, freed


def remove_outdated(cache_dir: Path, front_end: str, version: int) -> None:
    """Delete a front end's cache files made by other extraction versions (878 MB each for conv),
    which no run can use again. Files of other seeds or settings stay."""
    current = f"{front_end}-v{version}-"
    for f in cache_dir.glob(f"{front_end}-*.npy"):
        if not f.name.startswith(current):
            f.unlink(missing_ok=True)
            _sidecar(f).unlink(missing_ok=True)
