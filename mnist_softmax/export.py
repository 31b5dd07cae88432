"""A checkpoint as a standard ONNX graph: digits in MNIST form in, logits and probabilities out,
with the front end, the standardiser and the layer W·x + b inside, for use outside this project
(onnxruntime in Python, onnxruntime-web in a page). docs/export.md shows both.

The graph, opset 17, batch size free:

    digits (B, 1, 28, 28) float, 0..1     the 28×28 digits predict's pipeline makes, / 255
      -> the front end's maps (B, C, H, W)  pixels: the digits themselves; conv, cnn: 64×7×7
      -> x (B, N)                           flattened in C order (x[c·49 + h·7 + w]), standardised
      -> logits (B, 10) = x·Wᵀ + b
      -> probabilities (B, 10) = softmax(logits)

Each front end is written with ONNX's own operators, computing what its NumPy code computes
(the same formulas; float32 rounding may differ in the last digits). `onnx` is the export extra:
imported here only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .checkpoint import Checkpoint
from .errors import MnistSoftmaxError

OPSET = 17
IR_VERSION = 8
INSTALL = "pip install 'mnist-softmax[export]'"


def _onnx():
    try:
        import onnx
    except ImportError:
        raise MnistSoftmaxError(f"export needs the onnx package: {INSTALL}") from None
    return onnx


class _Graph:
    """Nodes and initializers, each tensor named for what it is."""

    def __init__(self, onnx):
        self.onnx, self.nodes, self.weights = onnx, [], []

    def const(self, name: str, value) -> str:
        self.weights.append(self.onnx.numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def double(self, name: str, value) -> str:
        self.weights.append(self.onnx.numpy_helper.from_array(np.asarray(value, np.float64), name))
        return name

    def ints(self, name: str, value) -> str:
        self.weights.append(self.onnx.numpy_helper.from_array(np.asarray(value, np.int64), name))
        return name

    def op(self, kind: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(self.onnx.helper.make_node(kind, inputs, [output], name=output, **attrs))
        return output


def _pixels(g: _Graph, digits: str, params: dict) -> str:
    return digits  # the maps are the digits themselves, 1×28×28, in [0, 1]


def _conv(g: _Graph, digits: str, params: dict) -> str:
    """kmeans_conv.maps: each k×k patch normalised by its mean and std (AveragePool of x and x²),
    its response to each of 64 filters (zero-mean, so the patch's mean drops out), rectified with
    the threshold, 4×4 average pooling, and the [1, 2, 1]/4 tent along rows and columns (a
    depthwise conv)."""
    from .kmeans_conv import N_FILTERS, PATCH_VAR_EPS, POOL, zero_mean

    filters = params["filters"]  # (k·k, 64), a patch flattened row by row
    k = int(round(np.sqrt(filters.shape[0])))
    p = k // 2
    # The patch's mean and variance in float64, as the NumPy code computes them (_patch_stats): box
    # sums of k shifted slices along rows, then along columns, of the zero-padded image.
    wide = g.op("Cast", [digits], "digits_float64", to=g.onnx.TensorProto.DOUBLE)
    padded = g.op("Pad", [wide, g.ints("patch_pads", [0, 0, p, p, 0, 0, p, p])], "padded_float64")

    def box_mean(x: str, name: str) -> str:
        for axis, size in ((2, 28), (3, 28)):
            parts = [g.op("Slice", [x, g.ints(f"{name}_a{axis}_s{t}", [t]), g.ints(f"{name}_a{axis}_e{t}", [t + size]),
                                    g.ints(f"{name}_axis{axis}_{t}", [axis])], f"{name}_slice{axis}_{t}")
                     for t in range(k)]  # fmt: skip
            x = parts[0]
            for t, part in enumerate(parts[1:], 1):
                x = g.op("Add", [x, part], f"{name}_sum{axis}_{t}")
        return g.op("Div", [x, g.double(f"{name}_taps", k * k)], name)

    mean = box_mean(padded, "patch_mean")
    mean_sq = box_mean(g.op("Mul", [padded, padded], "squares_float64"), "patch_mean_of_squares")
    var = g.op("Sub", [mean_sq, g.op("Mul", [mean, mean], "patch_mean_squared")], "patch_variance_raw")
    var = g.op("Relu", [var], "patch_variance")  # max(·, 0), as the NumPy code clips it
    std = g.op("Sqrt", [g.op("Add", [var, g.double("patch_var_eps", PATCH_VAR_EPS)], "patch_var_plus_eps")],
               "patch_std_float64")  # fmt: skip
    std = g.op("Cast", [std], "patch_std", to=g.onnx.TensorProto.FLOAT)
    # (p − μ)·F = p·F̃ with zero-mean filters F̃ (kmeans_conv.zero_mean): no cancellation of p·F and μ·ΣF
    kernel = g.const("conv_filters_zero_mean", zero_mean(filters).T.reshape(N_FILTERS, 1, k, k))
    dot = g.op("Conv", [digits, kernel], "centred_dot", kernel_shape=[k, k], pads=[p, p, p, p])
    centred = g.op("Div", [dot, std], "normalised_response")
    bias = (params["offset"] + params["threshold"]).reshape(1, N_FILTERS, 1, 1)
    response = g.op("Relu", [g.op("Sub", [centred, g.const("offset_plus_threshold", bias)], "shifted_response")],
                    "rectified_response")  # fmt: skip
    pooled = g.op("AveragePool", [response], "pooled", kernel_shape=[POOL, POOL], strides=[POOL, POOL])
    tent = np.outer([1, 2, 1], [1, 2, 1]) / 16
    tents = g.const("tent", np.broadcast_to(tent, (N_FILTERS, 1, 3, 3)))
    return g.op("Conv", [pooled, tents], "maps", kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=N_FILTERS)


def _cnn(g: _Graph, digits: str, params: dict) -> str:
    """cnn.forward at eval: standardised pixels, then twice conv 5×5 -> 2×2 max pool -> + bias (or
    batch norm with its running statistics) -> ReLU."""
    from .cnn import PIXEL_MEAN, PIXEL_STD
    from .cnn_layers import BN_EPS

    h = g.op("Div", [g.op("Sub", [digits, g.const("pixel_mean", PIXEL_MEAN)], "centred_pixels"),
                     g.const("pixel_std", PIXEL_STD)], "network_input")  # fmt: skip
    for k in (1, 2):
        w = g.const(f"conv{k}_w", params[f"conv{k}_w"])
        h = g.op("Conv", [h, w], f"conv{k}", kernel_shape=[5, 5], pads=[2, 2, 2, 2])
        h = g.op("MaxPool", [h], f"pool{k}", kernel_shape=[2, 2], strides=[2, 2])
        if f"bn{k}_g" in params:
            names = [g.const(f"bn{k}_{p}", params[f"bn{k}_{p}"]) for p in ("g", "b", "mean", "var")]
            h = g.op("BatchNormalization", [h, *names], f"bn{k}", epsilon=BN_EPS)
        else:
            h = g.op("Add", [h, g.const(f"conv{k}_b", params[f"conv{k}_b"].reshape(1, -1, 1, 1))], f"biased{k}")
        h = g.op("Relu", [h], "maps" if k == 2 else f"relu{k}")
    return h


FRONT_ENDS = {"pixels": _pixels, "conv": _conv, "cnn": _cnn}


def onnx_model(checkpoint: Checkpoint):
    """The checkpoint's model as an onnx.ModelProto (see the module's docstring), with metadata:
    the front end, N, the training recipe (JSON) and the test accuracy the run reported."""
    onnx = _onnx()
    model = checkpoint.model
    if model.front_end not in FRONT_ENDS:
        raise MnistSoftmaxError(f"front end {model.front_end!r} has no ONNX form")
    g = _Graph(onnx)
    maps = FRONT_ENDS[model.front_end](g, "digits", model.fe_params)
    flat = g.op("Flatten", [maps], "features", axis=1)  # C order: x[c·H·W + h·W + w]
    x = g.op("Div", [g.op("Sub", [flat, g.const("standardiser_mean", model.mean)], "centred_features"),
                     g.const("standardiser_scale", model.scale)], "x")  # fmt: skip
    z = g.op("Gemm", [x, g.const("W", model.W), g.const("b", model.b)], "logits", transB=1)
    g.op("Softmax", [z], "probabilities", axis=1)
    T, N = model.W.shape
    f32 = onnx.TensorProto.FLOAT
    graph = onnx.helper.make_graph(
        g.nodes,
        f"mnist-softmax {model.front_end}",
        [onnx.helper.make_tensor_value_info("digits", f32, ["batch", 1, 28, 28])],
        [
            onnx.helper.make_tensor_value_info("logits", f32, ["batch", T]),
            onnx.helper.make_tensor_value_info("probabilities", f32, ["batch", T]),
        ],  # fmt: skip
        g.weights,
    )
    # IR version 8 (what opset 17 needs), not the installed onnx's newest: older runtimes, and
    # onnxruntime-web, refuse a file whose IR version is newer than theirs.
    out = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                 producer_name="mnist-softmax", ir_version=IR_VERSION)  # fmt: skip
    out.doc_string = (
        "Input 'digits': a batch of 28×28 digits in MNIST form (light ink on black, centred by mass "
        "in a 20-pixel box: what mnist-softmax predict's pipeline makes), as float in [0, 1]. "
        f"Outputs 'logits' = x·Wᵀ + b and 'probabilities' = softmax(logits), {T} classes; 'x' is the "
        f"standardised N-vector, N = {N}."
    )
    accuracy = checkpoint.metrics.get("test_accuracy")
    meta = {
        "front_end": model.front_end,
        "n_features": str(N),
        "classes": str(T),
        "recipe": json.dumps(checkpoint.config, sort_keys=True),
        "test_accuracy": f"{accuracy:.4f}" if isinstance(accuracy, float | int) else "not scored",
        "input": "digits: float (batch, 1, 28, 28) in [0, 1]",
    }
    onnx.helper.set_model_props(out, meta)
    onnx.checker.check_model(out, full_check=True)
    return out


def export_onnx(checkpoint: Checkpoint, path: str | Path, source: str | Path | None = None) -> Path:
    """Write the checkpoint as ONNX to path (atomically: a file there is replaced whole or not at
    all). path must name a file: not a folder, not a device or pipe, not the checkpoint `source`
    the model was read from."""
    from .fileio import atomic_write_bytes

    _check_out(path, source)
    path = Path(path)
    data = onnx_model(checkpoint).SerializeToString()
    atomic_write_bytes(path, data)
    return path


def _check_out(path: str | Path, source: str | Path | None) -> None:
    """MnistSoftmaxError if writing a file to path would not give the user a new .onnx file: a
    checkpoint (the one exported from, or any other) is never replaced."""
    import os

    from .checkpoint import is_checkpoint
    from .fileio import check_replaceable

    text = os.fspath(path)  # as given: Path("newdir/") would drop the slash that says "a folder"
    path = Path(text)
    if text in ("", "-"):
        raise MnistSoftmaxError(f"give the ONNX file a name (not {text!r}), such as model.onnx")
    if path.is_dir() or text.endswith(os.sep) and not path.exists():
        raise MnistSoftmaxError(f"{text} is a folder; give a file name, such as {Path(text) / 'model.onnx'}")
    if text.endswith(os.sep):  # a file named as a folder would be
        raise MnistSoftmaxError(f"{text} exists and is not a regular file; give a file name, such as model.onnx")
    check_replaceable(text, "model.onnx")
    if not path.exists():
        return  # nothing there yet (a missing folder is the write's to report)
    if source is not None and os.path.samefile(path, source):
        raise MnistSoftmaxError(f"{text} is the checkpoint itself; give the ONNX file another name, such as model.onnx")
    if is_checkpoint(path):
        raise MnistSoftmaxError(f"{text} is a checkpoint, which export never replaces; give another name: model.onnx")
