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


def test_the_graph_keeps_to_ir_version_8_so_older_runtimes_and_onnxruntime_web_load_it(checkpoints, tmp_path):
    run("export", "--checkpoint", checkpoints["conv"], tmp_path / "m.onnx")
    assert onnx.load(str(tmp_path / "m.onnx")).ir_version == 8  # opset 17's; onnxruntime-web 1.31 reads IR 13 at most


def test_export_never_writes_onto_its_checkpoint_a_folder_a_device_or_a_pipe(checkpoints, tmp_path, monkeypatch):
    import os

    monkeypatch.chdir(tmp_path)
    own = tmp_path / "model.npz"
    own.write_bytes(checkpoints["pixels"].read_bytes())
    (tmp_path / "latest").symlink_to(tmp_path)
    os.mkfifo(tmp_path / "pipe.onnx")
    cases = {
        "model.npz": "model.npz is the checkpoint itself; give the ONNX file another name, such as model.onnx",
        "latest/model.npz": "latest/model.npz is the checkpoint itself; give the ONNX file another name, such as"
        " model.onnx",
        "pipe.onnx": "pipe.onnx exists and is not a regular file; give a file name, such as model.onnx",
        "/dev/null": "/dev/null exists and is not a regular file; give a file name, such as model.onnx",
        "newdir/": "newdir/ is a folder; give a file name, such as newdir/model.onnx",
        "latest": "latest is a folder; give a file name, such as latest/model.onnx",
        "model.npz/": "model.npz/ exists and is not a regular file; give a file name, such as model.onnx",
        "-": "give the ONNX file a name (not '-'), such as model.onnx",
    }
    for out, message in cases.items():
        result = run("export", "--checkpoint", own, out, ok=False)
        assert (result.exit_code, result.output) == (1, f"Error: {message}\n"), out
    assert own.read_bytes() == checkpoints["pixels"].read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "model.npz", "pipe.onnx"]
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
