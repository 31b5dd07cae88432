"""`mnist-softmax export --format onnx` (issue 29): the graph is valid ONNX, says what it is, and a
second implementation (onnxruntime; mandatory under CI, else onnx's own reference evaluator on a few
digits) gives eval's logits for every test digit, for pixels, conv and cnn checkpoints."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import optional_peer, run

from mnist_softmax.checkpoint import load_checkpoint

onnx = pytest.importorskip("onnx", reason="the export extra: pip install -e '.[test]' installs onnx")


@pytest.fixture(scope="module")
def checkpoints(trained, conv_trained, cnn_trained) -> dict:
    return {"pixels": trained[0] / "runs" / "latest" / "model.npz", "conv": conv_trained / "model.npz",
            "cnn": cnn_trained / "model.npz"}  # fmt: skip


def _eval_logits(checkpoint, images) -> np.ndarray:
    """The logits `eval` scores with: the model's features of the digits, then W·x + b."""
    model = load_checkpoint(checkpoint).model
    return model.features(images) @ model.W.T + model.b


def _digits(images) -> np.ndarray:
    return (images[:, None] / np.float32(255)).astype(np.float32)


@pytest.mark.parametrize("front_end", ["pixels", "conv", "cnn"])
def test_the_exported_graph_gives_evals_logits_for_every_test_digit(front_end, checkpoints, mnist, tmp_path):
    checkpoint = checkpoints[front_end]
    out = tmp_path / f"{front_end}.onnx"
    result = run("export", "--checkpoint", checkpoint, "--format", "onnx", out)
    assert result.output == f"wrote {out} (ONNX, opset 17) from {checkpoint}\n"
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["digits"]
    assert [o.name for o in model.graph.output] == ["logits", "probabilities"]
    assert "x" in {n.output[0] for n in model.graph.node}  # the N-vector the layer takes, by its name
    assert model.opset_import[0].version >= 17
    meta = {p.key: p.value for p in model.metadata_props}
    ck = load_checkpoint(checkpoint)
    assert meta["front_end"] == front_end and meta["n_features"] == str(ck.model.W.shape[1])
    assert json.loads(meta["recipe"]) == ck.config and meta["test_accuracy"] == f"{ck.metrics['test_accuracy']:.4f}"
    want = _eval_logits(checkpoint, mnist.test_images)
    from onnx.reference import ReferenceEvaluator  # onnx's own evaluator: a few digits, everywhere

    z, p = ReferenceEvaluator(model).run(None, {"digits": _digits(mnist.test_images[:3])})
    assert np.abs(z - want[:3]).max() <= 1e-4 and np.allclose(p.sum(1), 1, atol=1e-6)
    ort = optional_peer("onnxruntime")
    if ort is None:
        return
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    z, p = session.run(["logits", "probabilities"], {"digits": _digits(mnist.test_images)})
    assert np.abs(z - want).max() <= 1e-4
    assert np.array_equal(z.argmax(1), want.argmax(1))  # the same answer for every one of the 10,000
    e = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(p, e / e.sum(1, keepdims=True), atol=1e-6)


def test_without_onnx_export_says_how_to_get_it_in_one_line(checkpoints, tmp_path):
    argv = ["mnist-softmax", "export", "--checkpoint", str(checkpoints["pixels"]), str(tmp_path / "m.onnx")]
    code = f"import sys; sys.modules['onnx'] = None\nfrom mnist_softmax.__main__ import run\nsys.argv = {argv!r}\nrun()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == "Error: export needs the onnx package: pip install 'mnist-softmax[export]'\n"
    assert not (tmp_path / "m.onnx").exists()


def test_export_writes_atomically_and_refuses_bad_arguments(checkpoints, tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"an older file")
    run("export", "--checkpoint", checkpoints["pixels"], out)  # --format onnx is the default
    assert onnx.load(str(out)).graph.output[0].name == "logits"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temp file left
    bad = run("export", "--checkpoint", checkpoints["pixels"], "--format", "tflite", out, ok=False)
    assert bad.exit_code == 2 and "Invalid value for '--format': 'tflite' is not 'onnx'" in bad.output
