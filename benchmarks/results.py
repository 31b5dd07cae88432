"""What the benchmark scripts share: the machine's reference speeds, and writing RESULTS.md.

Each script replaces its own section of benchmarks/RESULTS.md (between `<!-- begin NAME -->` and
`<!-- end NAME -->`), atomically, with the figures it just measured, the machine and its command.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = (
    "# Benchmark results\n\n"
    "Written by the scripts in this folder, never by hand: each run of a script replaces its own\n"
    "section with what it measured. How they measure: docs/performance.md. The machine is shared,\n"
    "so each section gives its reference speeds, measured in the same run.\n"
)


def matmul_gflops(size: int, reps: int = 5) -> float:
    """GFLOP/s of a size² float32 matrix product (BLAS with its default threads): mean of reps, after one."""
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    a @ a
    t = time.perf_counter()
    for _ in range(reps):
        a @ a
    return 2 * size**3 * reps / (time.perf_counter() - t) / 1e9


def reference_speeds() -> str:
    """A 2000² float32 matmul's GFLOP/s and a 200 MB scale-copy's GB/s: to compare runs made at
    different moments on a machine whose speed varies. Measured in a child process, so that this
    one's memory (which the processes it starts inherit in their peak RSS) stays small."""
    import subprocess

    code = "import results; print(results._reference_speeds())"
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True, text=True)
    return out.stdout.strip() or f"(reference speeds not measured: {out.stderr.strip()[-200:]})"


def _reference_speeds() -> str:
    gflops = matmul_gflops(2000)
    b = np.ones(50_000_000, np.float32)
    t = time.perf_counter()
    np.multiply(b, 2, out=b)
    gbs = 2 * b.nbytes / (time.perf_counter() - t) / 1e9
    return f"{gflops:.0f} GFLOP/s matmul, {gbs:.1f} GB/s memory"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = os.environ.get("OPENBLAS_CORETYPE")
    pinned = f", OPENBLAS_CORETYPE={blas}" if blas else ""
    return f"{os.cpu_count()} cores ({cpu}), NumPy {np.__version__}, Python {sys.version.split()[0]}{pinned}"


def write_section(name: str, markdown: str) -> None:
    """Replace section `name` of RESULTS.md with `markdown` (appended when new), atomically."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else HEADER
    block = f"{begin}\n{markdown.strip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = RESULTS.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, RESULTS)
    print(f"wrote section '{name}' of {RESULTS}", file=sys.stderr)
