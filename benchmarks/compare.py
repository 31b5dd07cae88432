"""mnist-softmax against the tools people would use instead, on the same work, on this machine.

    pip install -e '.[bench]'          # torch==2.13.0 (CPU) and scikit-learn, never runtime deps
    python benchmarks/compare.py --data-dir data [--rounds 3]

Every contender trains a 10×784 softmax classifier on the same 55,000 standardised training
images (mnist-softmax's own features: same scaling) and is scored on the 10,000 test images:

  mnist-softmax        our NumPy SGD loop (train_epoch, as `fit` runs it)
  pytorch              nn.Linear + F.cross_entropy + torch.optim.SGD, the identical recipe:
                       zero init, same epochs, batch size, lr, momentum, L2 on W only, cosine per epoch
  sklearn-lbfgs        LogisticRegression(solver="lbfgs"), C matched to our L2 (C = 1 / (wd·n))
  sklearn-sgd          SGDClassifier(loss="log_loss"), alpha = wd, the same number of epochs

Each runs in its own process (so its peak RSS is its own), in alternating order (A B C D A B C D
...) for --rounds rounds; the table gives medians. Timed: training only (data prepared first).
Then the achieved GFLOP/s of our loop (4·N·T flops per sample: the forward and the weight-gradient
products) beside a large float32 matrix product's, measured in the same run, and finally
benchmarks/bench.py: the whole CLI commands and the conv feature extraction, timed as processes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from results import machine, matmul_gflops, reference_speeds, write_section  # this folder is on sys.path

CONTENDERS = ("mnist-softmax", "pytorch", "sklearn-lbfgs", "sklearn-sgd")


def _data(data_dir: str):
    from mnist_softmax.config import Config
    from mnist_softmax.data import load_mnist
    from mnist_softmax.streams import rng_streams
    from mnist_softmax.train import prepare

    cfg = Config()
    model, (X, y), _, (X_test, y_test) = prepare(cfg, load_mnist(data_dir, quiet=True), rng_streams(cfg.seed))
    return cfg, np.ascontiguousarray(X), y, X_test, y_test


def work_ours(cfg, X, y, X_test, y_test) -> dict:
    from mnist_softmax.model import evaluate
    from mnist_softmax.streams import rng_streams
    from mnist_softmax.train import layer_step, lr_at, train_epoch

    W, b = np.zeros((10, X.shape[1]), np.float32), np.zeros(10, np.float32)
    velocity, rng = (np.zeros_like(W), np.zeros_like(b)), rng_streams(cfg.seed)["order"]
    t = time.perf_counter()
    with layer_step(W, b, velocity, cfg.momentum, cfg.weight_decay) as step:
        for epoch in range(cfg.epochs):
            train_epoch(step, X, y, rng.permutation(len(X)), lr_at(cfg, epoch), cfg.batch_size)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "passes": cfg.epochs, "test_acc": evaluate(W, b, X_test, y_test)[1]}


def work_torch(cfg, X, y, X_test, y_test) -> dict:
    import torch
    import torch.nn.functional as F

    from mnist_softmax.train import lr_at

    torch.manual_seed(cfg.seed)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    lin = torch.nn.Linear(X.shape[1], 10)
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    groups = [{"params": [lin.weight], "weight_decay": cfg.weight_decay}, {"params": [lin.bias], "weight_decay": 0.0}]
    opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    gen = torch.Generator().manual_seed(cfg.seed)
    t = time.perf_counter()
    for epoch in range(cfg.epochs):
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, epoch)
        perm = torch.randperm(len(Xt), generator=gen)
        for s in range(0, len(Xt), cfg.batch_size):
            idx = perm[s : s + cfg.batch_size]
            loss = F.cross_entropy(lin(Xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - t
    with torch.no_grad():
        acc = float((lin(torch.from_numpy(X_test)).argmax(1).numpy() == y_test).mean())
    return {"seconds": seconds, "passes": cfg.epochs, "test_acc": acc, "threads": torch.get_num_threads()}


def work_lbfgs(cfg, X, y, X_test, y_test) -> dict:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(solver="lbfgs", C=1.0 / (cfg.weight_decay * len(X)), max_iter=100)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "passes": int(clf.n_iter_.max()), "test_acc": float(clf.score(X_test, y_test))}


def work_sgd(cfg, X, y, X_test, y_test) -> dict:
    from sklearn.linear_model import SGDClassifier

    clf = SGDClassifier(loss="log_loss", alpha=cfg.weight_decay, max_iter=cfg.epochs, tol=None, random_state=cfg.seed)
    t = time.perf_counter()
    clf.fit(X, y)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "passes": cfg.epochs, "test_acc": float(clf.score(X_test, y_test))}


WORKERS = {"mnist-softmax": work_ours, "pytorch": work_torch, "sklearn-lbfgs": work_lbfgs, "sklearn-sgd": work_sgd}


def run_worker(name: str, data_dir: str) -> dict:
    """One contender in a child process: its result and its own peak RSS."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--worker", name, "--data-dir", data_dir],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{err}")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    ap.add_argument(
        "--model", choices=("softmax", "cnn"), default="softmax", help="cnn: benchmarks/cnn_compare.py's comparison"
    )
    a, rest = ap.parse_known_args()
    if a.model == "cnn":  # the network of --features cnn against PyTorch: its own script, its own options
        script = Path(__file__).with_name("cnn_compare.py")
        args = ["--data-dir", a.data_dir, "--rounds", str(a.rounds), *rest]
        raise SystemExit(subprocess.run([sys.executable, str(script), *args]).returncode)
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")

    if a.worker:  # child: prepare the data (untimed), train, report JSON with its own peak RSS
        import resource

        result = WORKERS[a.worker](*_data(a.data_dir))
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    before = reference_speeds()
    results: dict[str, list[dict]] = {name: [] for name in CONTENDERS}
    for r in range(a.rounds):
        order = CONTENDERS if r % 2 == 0 else CONTENDERS[::-1]  # A B C D, then D C B A, ...
        for name in order:
            results[name].append(run_worker(name, a.data_dir))
            print(f"round {r + 1}: {name} {results[name][-1]['seconds']:.2f}s", file=sys.stderr, flush=True)

    n = 55_000
    med = {k: statistics.median(x["seconds"] for x in v) for k, v in results.items()}
    lines = [
        "## Against PyTorch and scikit-learn",
        "",
        f"`python benchmarks/compare.py --data-dir DATA --rounds {a.rounds}`: the same 10×784 softmax classifier",
        "on the same 55,000 standardised images; each tool in its own process, alternating order, medians of",
        f"{a.rounds} rounds, training time only. PyTorch {_torch_version()} with its default threads.",
        f"Machine: {machine()}; reference speeds {before} at the start, {reference_speeds()} at the end.",
        "",
        "| tool | wall s | samples/s | passes | test accuracy | peak RSS MiB | time ÷ ours |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, runs in results.items():
        passes = runs[0]["passes"]
        lines.append(
            f"| {name} | {med[name]:.2f} | {passes * n / med[name]:,.0f} | {passes} | "
            f"{statistics.median(x['test_acc'] for x in runs):.4f} | {max(x['peak_rss_mb'] for x in runs):.0f} | "
            f"{med[name] / med['mnist-softmax']:.2f} |"
        )
    ours_sps = results["mnist-softmax"][0]["passes"] * n / med["mnist-softmax"]
    loop_gflops = 4 * 784 * 10 * ours_sps / 1e9
    peak = matmul_gflops(2048)
    lines += [
        "",
        f"Our loop: {loop_gflops:.1f} GFLOP/s (4·784·10 flops per sample) on one BLAS thread, batches gathered",
        f"on a second thread; a 2048² float32 matmul in the same run: {peak:.0f} GFLOP/s on {os.cpu_count()} cores"
        f" ({loop_gflops / peak:.1%} of it).",
    ]
    print("\n".join(lines), flush=True)
    write_section("compare", "\n".join(lines))
    # The whole commands (train, train --features conv, eval, predict, conv extraction), same run.
    subprocess.run([sys.executable, str(Path(__file__).with_name("bench.py")), "--data-dir", a.data_dir], check=True)


def _torch_version() -> str:
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"], capture_output=True)
    return out.stdout.decode().strip() or "(not installed)"


if __name__ == "__main__":
    main()
