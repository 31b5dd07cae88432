"""The Python API (issue 29): only the public names, the whole lesson through them, each documented,
and `import mnist_softmax` light (nothing of NumPy's weight until a name is used)."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import mnist_softmax as ms

PUBLIC = ["Config", "classify", "export_onnx", "fit", "load_config", "load_mnist", "load_model", "read_digit", "score"]


def test_the_public_names_are_few_documented_and_cost_nothing_to_import():
    assert sorted(ms.__all__) == sorted(PUBLIC) and sorted(n for n in dir(ms) if not n.startswith("_")) == PUBLIC
    for name in PUBLIC:
        assert len(getattr(ms, name).__doc__ or "") > 80, name
    code = "import sys, mnist_softmax; print(sorted(m for m in ('numpy', 'PIL', 'click') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
    with pytest.raises(AttributeError):
        ms.not_a_name  # noqa: B018


def test_the_whole_lesson_through_the_public_names(mnist_dir, trained, tmp_path):
    data = ms.load_mnist(mnist_dir)
    assert data.train_images.shape == (60000, 28, 28) and data.test_labels.shape == (10000,)
    cfg = ms.load_config("pixels", epochs=2)
    assert isinstance(cfg, ms.Config) and cfg.epochs == 2
    rows = []
    result = ms.fit(cfg, data, on_epoch=rows.append)
    assert [r["epoch"] for r in rows] == [1, 2] and result.test_acc > 0.9
    assert ms.fit(cfg, data).model.W.tobytes() == result.model.W.tobytes()  # same recipe, same result
    s = ms.score(result, "test", data)
    assert s.accuracy == result.test_acc and s.confusion.sum() == 10000

    # An image from a file, from a PIL image and from an array: the same digit each way.
    seven = 255 - np.kron(data.test_images[0], np.ones((4, 4), np.uint8))  # dark ink on light, 112×112
    path = tmp_path / "seven.png"
    Image.fromarray(seven).save(path)
    digits = [ms.read_digit(path), ms.read_digit(Image.open(path)), ms.read_digit(seven), ms.read_digit(seven / 255.0)]
    for d in digits:
        np.testing.assert_array_equal(d.digit, digits[0].digit)
    assert digits[0].inverted and digits[0].digit.shape == (28, 28)

    checkpoint = ms.load_model(trained[0] / "runs" / "latest" / "model.npz")
    p = ms.classify(checkpoint, path, label=7)
    assert p.digit_class == 7 and abs(p.probabilities.sum() - 1) < 1e-6
    assert p.loss == pytest.approx(-np.log(p.probabilities[7]))
    e = p.explanation  # every number of the lesson, for this digit
    np.testing.assert_allclose(e.z, checkpoint.model.W @ e.x + checkpoint.model.b, rtol=1e-5, atol=1e-5)
    assert ms.score(checkpoint, "val", data).accuracy == checkpoint.metrics["val_accuracy"]
    with pytest.raises(ValueError, match="split is rebuilt from the recipe's seed"):
        ms.score(result.model, "val", data)
    pytest.importorskip("onnx")
    assert ms.export_onnx(checkpoint, tmp_path / "m.onnx").stat().st_size > 30_000
