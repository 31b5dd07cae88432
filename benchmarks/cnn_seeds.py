"""The cnn recipes' test accuracy over seeds, and how long each run takes: `mnist-softmax train` as a
user runs it.

    python benchmarks/cnn_seeds.py --data-dir data [--seeds 0,1,2] [--config cnn] [--config cnn-quick]

For each config and seed, `mnist-softmax train --config CONFIG --seed S` in its own process, one
after another (nothing else running: the machine has two cores): the test accuracy and loss the
run reports (summary.json), its final validation accuracy, and the run's wall time from start to
the written run folder. The recipe was chosen on the validation split; these test figures were not
used to choose it. No assertions: the table goes to RESULTS.md's "cnn-seeds" section (target for the
default recipe: mean test accuracy ≥ 0.9960 over seeds 0, 1, 2, none under 0.9950; about three
minutes each).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import machine, reference_speeds, write_section  # noqa: E402


def one_run(config: str, seed: int, data_dir: str, out: Path) -> dict:
    cmd = [sys.executable, "-m", "mnist_softmax", "train", "--config", config, "--seed", str(seed),
           "--data-dir", data_dir, "--out", str(out), "-q"]  # fmt: skip
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    summary = json.loads((out / "summary.json").read_text())
    history = [line.split(",") for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    return {"seconds": seconds, "test_accuracy": summary["test_accuracy"], "test_loss": summary["test_loss"],
            "val_accuracy": float(history[-1][5]), "epochs": len(history)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--config", action="append", help="repeatable; default: cnn")
    a = ap.parse_args()
    configs = a.config or ["cnn"]
    seeds = [int(s) for s in a.seeds.split(",")]
    before = reference_speeds()
    rows, summary = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for config in configs:
            runs = []
            for seed in seeds:
                r = one_run(config, seed, str(Path(a.data_dir).resolve()), Path(tmp) / f"{config}-{seed}")
                runs.append(r)
                cells = (config, seed, r["epochs"], f"{r['val_accuracy']:.4f}", f"{r['test_accuracy']:.4f}",
                         f"{r['test_loss']:.4f}", f"{r['seconds']:.0f}")  # fmt: skip
                rows.append("| " + " | ".join(map(str, cells)) + " |")
                print(rows[-1], flush=True)
            accs = [r["test_accuracy"] for r in runs]
            summary.append(f"| {config} | {statistics.mean(accs):.4f} | {min(accs):.4f} | {max(accs):.4f} | "
                           f"{statistics.mean(r['seconds'] for r in runs):.0f} |")  # fmt: skip
    text = "\n".join(
        [
            "## The cnn recipes over seeds",
            "",
            f"`python benchmarks/cnn_seeds.py --seeds {a.seeds}"
            + "".join(f" --config {c}" for c in configs)
            + "`: `mnist-softmax train --config CONFIG --seed S` in its own process, one run after another; the "
            "test accuracy and loss it reports, its last validation accuracy, and its wall time from start to the "
            "written run folder (loading MNIST and scoring the test set included). The recipes were chosen on "
            "the validation split, never on these test figures.",
            f"Machine: {machine()}; reference speeds {before} at the start, {reference_speeds()} at the end.",
            "",
            "| config | seed | epochs | val acc | test acc | test loss | seconds |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
            "| config | mean test acc | lowest | highest | mean seconds |",
            "| --- | --- | --- | --- | --- |",
            *summary,
        ]
    )
    write_section("cnn-seeds", text)


if __name__ == "__main__":
    main()
