"""PyTorch's numbers for the cross-checks, recorded, so that the checks run everywhere, torch or not.

    python tests/torch_reference.py [--data-dir DIR]      # writes tests/fixtures/torch_reference.npz

Each case's inputs are made here, from fixed seeds, by the same functions the tests call; this script
runs them through PyTorch (torch==2.13.0, CPU) and stores what it computes. The tests compare the
project's numbers with the recorded ones always, and with PyTorch itself too where it is installed
(under CI, where .ci/run installs it, that second comparison is mandatory). A change to a case's
inputs, or to the torch version, means running this again and committing the file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "fixtures" / "torch_reference.npz"
TORCH_VERSION = "2.13.0"
SAMPLES = 256  # entries of each full-size parameter recorded after the training steps


def each_reference(case: str, live):
    """PyTorch's numbers for a case: those recorded, then, with torch installed, computed now by
    live(torch) (mandatory under CI: conftest.optional_peer)."""
    from conftest import optional_peer

    yield recorded(case)
    torch = optional_peer("torch")
    if torch is not None:
        yield live(torch)


# ------------------------------------------------------------------------------ the cases' inputs


def conv_case(channels: int):
    """(x (8, 6, 3, C), w (7, C, 5, 5), R (4, 3, 3, 7) the pooled output's gradient), float64."""
    rng = np.random.default_rng(5)
    return (
        rng.standard_normal((8, 6, 3, channels)),
        rng.standard_normal((7, channels, 5, 5)),
        rng.standard_normal((4, 3, 3, 7)),
    )


def network_case():
    """(params of the tiny float64 network, x (8, 8, 6, 1), y (6,)), a flat corner in two images."""
    from mnist_softmax import cnn

    rng = np.random.default_rng(6)
    params = {k: v.astype(np.float64) for k, v in cnn.init_params(rng, image_size=8, maps=(3, 4)).items()}
    x, y = rng.standard_normal((8, 8, 6, 1)), rng.integers(0, 10, 6)
    x[:2, :, :2] = x[0, 0, 0]  # a flat corner: pooling windows with tied inputs, as on MNIST's background
    return params, x, y


def steps_case(mnist):
    """(the full-size float32 network's initial params, [(images, labels)] of two steps of 16)."""
    from mnist_softmax import cnn

    params = cnn.init_params(np.random.default_rng(7))
    batches = [(mnist.train_images[16 * s : 16 * s + 16], mnist.train_labels[16 * s : 16 * s + 16]) for s in (0, 1)]
    return params, batches


STEPS = {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-3}


def bn_network_case():
    """network_case's inputs for the network with batch norm (γ, β away from 1 and 0; running
    statistics away from 0 and 1, for the eval pass)."""
    from mnist_softmax import cnn

    rng = np.random.default_rng(8)
    params = cnn.init_params(rng, image_size=8, maps=(3, 4), batch_norm=True)
    params = {k: v.astype(np.float64) for k, v in params.items()}
    for k, c in ((1, 3), (2, 4)):
        params[f"bn{k}_g"] = rng.uniform(0.5, 1.5, c)
        params[f"bn{k}_b"] = rng.uniform(-0.5, 0.5, c)
        params[f"bn{k}_mean"] = rng.uniform(-0.5, 0.5, c)
        params[f"bn{k}_var"] = rng.uniform(0.5, 2.0, c)
    x, y = rng.standard_normal((8, 8, 6, 1)), rng.integers(0, 10, 6)
    return params, x, y


def bn_steps_case(mnist):
    """steps_case for the full-size network with batch norm."""
    from mnist_softmax import cnn

    params = cnn.init_params(np.random.default_rng(9), batch_norm=True)
    batches = [(mnist.train_images[16 * s : 16 * s + 16], mnist.train_labels[16 * s : 16 * s + 16]) for s in (2, 3)]
    return params, batches


def sample_index(shape: tuple[int, ...]) -> np.ndarray:
    """The flat indices of the entries recorded for a parameter of this shape."""
    size = int(np.prod(shape))
    return np.sort(np.random.default_rng(size).choice(size, min(SAMPLES, size), replace=False))


def sgd_problem(seed: int = 0, n: int = 203, N: int = 12, T: int = 10):
    """float64 data with n not a multiple of the batch, and non-zero starting weights and velocities:
    (X, y, W, b, vW, vb, order)."""
    rng = np.random.default_rng(seed)
    X, y = rng.normal(size=(n, N)), rng.integers(0, T, n)
    W, b = rng.normal(scale=0.1, size=(T, N)), rng.normal(scale=0.1, size=T)
    vW, vb = rng.normal(scale=0.01, size=(T, N)), rng.normal(scale=0.01, size=T)
    return X, y, W, b, vW, vb, rng.permutation(n)


def sgd_case():
    """The softmax layer's epoch that PyTorch's SGD is compared on."""
    return sgd_problem(1)


SGD = {"lr": 0.3, "momentum": 0.9, "weight_decay": 0.05, "batch": 16}
ONE_CYCLE = {"total_steps": 100, "max_lr": 0.05}


# ------------------------------------------------------------------------------ PyTorch's numbers


def torch_net(torch, p, x_hw, dtype):
    """The project's network in PyTorch, conv -> + b -> ReLU -> pool, on input (H, W, B, 1)."""
    import torch.nn.functional as F

    x = torch.tensor(np.ascontiguousarray(x_hw[..., 0].transpose(2, 0, 1))[:, None], dtype=dtype)
    h = F.max_pool2d(F.relu(F.conv2d(x, p["conv1_w"], p["conv1_b"], padding=2)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, p["conv2_w"], p["conv2_b"], padding=2)), 2)
    return h.flatten(1) @ p["W"].T + p["b"]


def torch_bn_net(torch, p, x_hw, dtype, train: bool):
    """The network with batch norm in PyTorch: conv (no bias) -> pool -> BatchNorm -> ReLU, twice.
    With train, each piece of the batch (cnn._pieces, as the project cuts it) is normalised by its own
    statistics ("ghost" batch norm), and the running ones are updated in place, piece after piece
    (momentum 0.1); else the running statistics normalise."""
    import torch.nn.functional as F

    from mnist_softmax import cnn

    h = torch.tensor(np.ascontiguousarray(x_hw[..., 0].transpose(2, 0, 1))[:, None], dtype=dtype)
    pieces = cnn._pieces(h.shape[0]) if train else [slice(None)]
    for k in (1, 2):
        h = F.max_pool2d(F.conv2d(h, p[f"conv{k}_w"], padding=2), 2)
        bn = (p[f"bn{k}_mean"], p[f"bn{k}_var"], p[f"bn{k}_g"], p[f"bn{k}_b"], train, 0.1, 1e-5)
        h = F.relu(torch.cat([F.batch_norm(h[s], *bn) for s in pieces]))
    return h.flatten(1) @ p["W"].T + p["b"]


def torch_bn_network(torch) -> dict[str, np.ndarray]:
    """bn_network_case through torch_bn_net: the eval pass's logits, then the training pass's loss,
    logits, gradients and updated running statistics."""
    import torch.nn.functional as F

    params, x, y = bn_network_case()
    tp = {k: torch.tensor(v, requires_grad=not k.endswith(("_mean", "_var"))) for k, v in params.items()}
    with torch.no_grad():
        z_eval = torch_bn_net(torch, tp, x, torch.float64, train=False).numpy()
    zt = torch_bn_net(torch, tp, x, torch.float64, train=True)
    lt = F.cross_entropy(zt, torch.tensor(y))
    lt.backward()
    grads = {f"grad_{k}": t.grad.numpy() for k, t in tp.items() if t.requires_grad}
    running = {f"running_{k}": t.detach().numpy() for k, t in tp.items() if not t.requires_grad}
    return {"loss": np.array(lt.item()), "z": zt.detach().numpy(), "z_eval": z_eval} | grads | running


def _sgd_steps(torch, tp: dict, trained, batches, net):
    """torch.optim.SGD over batches [(images, labels)], weight decay on the kernels and W only (none
    on biases, γ and β), the logits net(x) of each batch's input -> (the optimiser, each step's loss)."""
    import torch.nn.functional as F

    from mnist_softmax import cnn

    groups = [
        {"params": [tp[k] for k in cnn.DECAYED], "weight_decay": STEPS["weight_decay"]},
        {"params": [tp[k] for k in trained if k not in cnn.DECAYED], "weight_decay": 0.0},
    ]
    opt = torch.optim.SGD(groups, lr=STEPS["lr"], momentum=STEPS["momentum"])
    losses = []
    for images, labels in batches:
        lt = F.cross_entropy(net(cnn.to_input(images)), torch.tensor(labels.astype(np.int64)))
        opt.zero_grad()
        lt.backward()
        opt.step()
        losses.append(lt.item())
    return opt, np.array(losses)


def torch_bn_steps(torch, mnist) -> dict[str, np.ndarray]:
    """torch_steps for bn_steps_case: two SGD steps (weight decay on the kernels and W only; none on
    γ and β), then each parameter's and running statistic's samples and an eval pass's logits."""
    from mnist_softmax import cnn

    params, batches = bn_steps_case(mnist)
    tp = {k: torch.tensor(v, requires_grad=not k.endswith(("_mean", "_var"))) for k, v in params.items()}
    trained = [k for k in tp if tp[k].requires_grad]
    _, losses = _sgd_steps(torch, tp, trained, batches, lambda x: torch_bn_net(torch, tp, x, torch.float32, train=True))
    out = {"losses": losses}
    for k, t in tp.items():
        idx = sample_index(t.shape)
        out[f"param_{k}"] = t.detach().numpy().reshape(-1)[idx]
    with torch.no_grad():
        out["z_eval"] = torch_bn_net(torch, tp, cnn.to_input(mnist.test_images[:8]), torch.float32, False).numpy()
    return out


def torch_conv(torch, channels: int) -> dict[str, np.ndarray]:
    """The conv (padding 2) and 2×2 max pool of conv_case, and their gradients, in (H, W, B, C) layout."""
    import torch.nn.functional as F

    x, w, R = conv_case(channels)
    xt = torch.tensor(x.transpose(2, 3, 0, 1), requires_grad=True)  # (B, C, H, W)
    wt = torch.tensor(w, requires_grad=True)
    yt = F.conv2d(xt, wt, padding=2)
    pt = F.max_pool2d(yt, 2)
    (pt * torch.tensor(R.transpose(2, 3, 0, 1))).sum().backward()
    hw = (2, 3, 0, 1)
    return {"y": yt.detach().numpy().transpose(hw), "p": pt.detach().numpy().transpose(hw),
            "dx": xt.grad.numpy().transpose(hw), "dw": wt.grad.numpy()}  # fmt: skip


def torch_network(torch) -> dict[str, np.ndarray]:
    import torch.nn.functional as F

    params, x, y = network_case()
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    zt = torch_net(torch, tp, x, torch.float64)
    lt = F.cross_entropy(zt, torch.tensor(y))
    lt.backward()
    return {"loss": np.array(lt.item()), "z": zt.detach().numpy()} | {
        f"grad_{k}": t.grad.numpy() for k, t in tp.items()
    }


def torch_steps(torch, mnist) -> dict[str, np.ndarray]:
    """Two torch.optim.SGD steps (weight decay on the kernels and W only) from steps_case: each step's
    loss, then SAMPLES entries of every parameter and momentum buffer (sample_index)."""
    from mnist_softmax import cnn

    params, batches = steps_case(mnist)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt, losses = _sgd_steps(torch, tp, cnn.PARAM_NAMES, batches, lambda x: torch_net(torch, tp, x, torch.float32))
    out = {"losses": losses}
    for k, t in tp.items():
        idx = sample_index(t.shape)
        out[f"param_{k}"] = t.detach().numpy().reshape(-1)[idx]
        out[f"momentum_{k}"] = opt.state[t]["momentum_buffer"].numpy().reshape(-1)[idx]
    return out


def torch_sgd(torch) -> dict[str, np.ndarray]:
    """One epoch of torch.optim.SGD over sgd_case, its momentum buffers starting at the first gradient."""
    X, y, W, b, _, _, order = sgd_case()
    w_t, b_t = torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True)
    groups = [{"params": [w_t], "weight_decay": SGD["weight_decay"]}, {"params": [b_t], "weight_decay": 0.0}]
    opt = torch.optim.SGD(groups, lr=SGD["lr"], momentum=SGD["momentum"])
    Xt, yt = torch.tensor(X), torch.tensor(y)
    for s in range(0, len(order), SGD["batch"]):
        idx = torch.tensor(order[s : s + SGD["batch"]])
        loss = torch.nn.functional.cross_entropy(Xt[idx] @ w_t.T + b_t, yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    momentum = opt.state[w_t]["momentum_buffer"].numpy(), opt.state[b_t]["momentum_buffer"].numpy()
    return {"W": w_t.detach().numpy(), "b": b_t.detach().numpy(), "vW": momentum[0], "vb": momentum[1]}


def torch_one_cycle(torch) -> np.ndarray:
    """OneCycleLR's learning rate at each of its steps."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cycle_momentum=False, **ONE_CYCLE)
    lrs = []
    for _ in range(ONE_CYCLE["total_steps"]):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(lrs)


def compute(torch, mnist) -> dict[str, np.ndarray]:
    """Every recorded number, by case: {"<case>/<name>": array}."""
    out = {}
    for channels in (1, 16):
        out |= {f"conv{channels}/{k}": v for k, v in torch_conv(torch, channels).items()}
    out |= {f"network/{k}": v for k, v in torch_network(torch).items()}
    out |= {f"steps/{k}": v for k, v in torch_steps(torch, mnist).items()}
    out |= {f"bn_network/{k}": v for k, v in torch_bn_network(torch).items()}
    out |= {f"bn_steps/{k}": v for k, v in torch_bn_steps(torch, mnist).items()}
    out |= {f"sgd/{k}": v for k, v in torch_sgd(torch).items()}
    out["one_cycle/lrs"] = torch_one_cycle(torch)
    return out


def recorded(case: str) -> dict[str, np.ndarray]:
    """The recorded numbers of one case: {name: array}."""
    with np.load(FIXTURE, allow_pickle=False) as z:
        if str(z["torch_version"]) != TORCH_VERSION:
            raise RuntimeError(f"{FIXTURE} was recorded with torch {z['torch_version']}, not {TORCH_VERSION}")
        return {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith(f"{case}/")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(HERE.parents[0] / "data"), help="a folder with the MNIST files")
    a = ap.parse_args()
    import torch

    from mnist_softmax.data import load_mnist

    if torch.__version__.split("+")[0] != TORCH_VERSION:
        sys.exit(f"torch {TORCH_VERSION} is the reference; this is {torch.__version__}")
    torch.manual_seed(0)
    numbers = compute(torch, load_mnist(a.data_dir, quiet=True))
    FIXTURE.parent.mkdir(exist_ok=True)
    np.savez_compressed(FIXTURE, torch_version=np.array(TORCH_VERSION), **numbers)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size:,} bytes, {len(numbers)} arrays)")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[0]))
    main()
