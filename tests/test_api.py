"""The Python API (issue 29): only the public names, the whole lesson through them, each documented,
and `import mnist_softmax` light (nothing of NumPy's weight until a name is used)."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import mnist_softmax as ms
from mnist_softmax.errors import ConfigError, ImageError, MnistSoftmaxError  # the API's exceptions, to catch

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


@pytest.fixture(scope="module")
def seven(mnist):
    """A test digit (a 7) as a user's photo might hold it: dark ink on light, 112×112."""
    return 255 - np.kron(mnist.test_images[0], np.ones((4, 4), np.uint8))


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F"])
def test_a_pil_image_in_any_mode_is_read_as_its_file_would_be(seven, mode, tmp_path):
    image = Image.fromarray(seven).convert(mode)
    digit = ms.read_digit(image)
    assert digit.digit.shape == (28, 28) and digit.inverted
    if mode in ("L", "RGB", "RGBA", "P"):
        np.testing.assert_array_equal(digit.digit, ms.read_digit(seven).digit)
    assert image.mode == mode  # the caller's image is left as it was


def test_a_pil_image_is_turned_upright_by_its_exif_orientation_as_its_file_is(seven, tmp_path):
    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    Image.fromarray(seven).save(path, exif=exif, quality=95)
    by_path, by_image = ms.read_digit(path), ms.read_digit(Image.open(path))
    np.testing.assert_array_equal(by_image.digit, by_path.digit)
    assert by_path.box != ms.read_digit(np.asarray(Image.open(path).convert("L"))).box  # it was turned
    with open(path, "rb") as f:  # an open file, and bytes in any form, the same
        np.testing.assert_array_equal(ms.read_digit(f).digit, by_path.digit)
    np.testing.assert_array_equal(ms.read_digit(memoryview(path.read_bytes())).digit, by_path.digit)
    with open(path) as f, pytest.raises(TypeError, match="binary mode"):
        ms.read_digit(f)
    ink = seven < 128  # booleans, and an array's own memory, are arrays too
    np.testing.assert_array_equal(ms.read_digit(ink).digit, ms.read_digit(ink.astype(np.uint8) * 255).digit)
    np.testing.assert_array_equal(ms.read_digit(memoryview(seven)).digit, ms.read_digit(seven).digit)


@pytest.mark.parametrize(
    "bad, error, words",
    [
        (None, TypeError, "not NoneType"),
        (np.zeros((0, 0)), ValueError, "holds no pixels"),
        (np.full((28, 28), 200.0), ValueError, "finite values in 0..1"),
        (np.full((28, 28), np.nan), ValueError, "finite values in 0..1"),
        (np.full((28, 28), 300, np.int32), ValueError, "holds 0..255, not 300..300"),
        ([[0, 1], [0]], ValueError, "must be rectangular"),
        (np.zeros((28, 28, 2)), ValueError, "not (28, 28, 2)"),
        (np.zeros((8000, 7000), np.uint8), ImageError, "image too large (more than 50,000,000 pixels)"),
        (Image.new("L", (0, 0)), ImageError, "too narrow"),
    ],
)
def test_what_is_not_an_image_is_refused_saying_why(bad, error, words):
    with pytest.raises(error) as e:
        ms.read_digit(bad)
    assert words in str(e.value)


def test_the_api_refuses_bad_arguments_by_name_and_takes_what_it_documents(mnist, trained, tmp_path):
    path = trained[0] / "runs" / "latest" / "model.npz"
    checkpoint = ms.load_model(path)
    for label in (-1, 10, 3.5, "3", True):
        with pytest.raises(ValueError, match=r"label must be an int in 0\.\.9, not "):
            ms.classify(checkpoint, mnist.test_images[0], label=label)
    assert ms.classify(checkpoint, mnist.test_images[0], label=np.int64(7)).loss > 0
    with pytest.raises(TypeError, match="config must be a Config"):
        ms.fit("pixels", mnist)
    for bad, words in [(dict(epochs=-3), "'epochs' must be in"), (dict(epochs=True), "'epochs'"),
                       (dict(epochs=1.5), "'epochs'"), (dict(lr="0.1"), "'lr'")]:  # fmt: skip
        with pytest.raises(ConfigError, match=words):
            ms.fit(ms.Config(**bad), mnist)
    with pytest.raises(TypeError, match="on_epoch must be a function"):
        ms.fit(ms.load_config("pixels"), mnist, on_epoch=5)
    with pytest.raises(TypeError, match="data must be load_mnist's arrays, not str"):
        ms.score(checkpoint, "test", data="data")
    with pytest.raises(ValueError, match="split must be 'train', 'val' or 'test'"):
        ms.score(checkpoint, "validation", mnist)
    assert ms.score(str(path), "test", mnist).accuracy == checkpoint.metrics["test_accuracy"]
    with pytest.raises(TypeError, match="model must be load_model's checkpoint or fit's result, not Model"):
        ms.export_onnx(checkpoint.model, tmp_path / "m.onnx")

    with pytest.raises(MnistSoftmaxError, match="is a checkpoint, which export never replaces"):
        ms.export_onnx(checkpoint, path)  # onto the very file it was loaded from
    assert ms.load_model(path).metrics == checkpoint.metrics

    result = ms.fit(ms.load_config("pixels", epochs=1), mnist)  # a fresh fit scores and exports as it is
    assert ms.score(result, "val", mnist).accuracy == result.final["val"][1]
    pytest.importorskip("onnx")
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(ms.export_onnx(result, tmp_path / "fit.onnx"))).metadata_props}
    assert meta["test_accuracy"] == f"{result.test_acc:.4f}" and '"epochs": 1' in meta["recipe"]


def test_a_large_jpeg_as_a_pil_image_is_read_at_its_files_scale(seven):
    """A file is decoded at 1/2, 1/4 or 1/8 scale when large (JPEG's draft); an image already
    decoded is reduced by the same factor, so both give the rules about the same pixels."""
    import io

    buf = io.BytesIO()
    Image.fromarray(seven).resize((3000, 3000), Image.BILINEAR).save(buf, format="JPEG", quality=90)
    by_bytes, by_image = ms.read_digit(buf.getvalue()), ms.read_digit(Image.open(io.BytesIO(buf.getvalue())))
    assert by_image.size == by_bytes.size and np.abs(np.subtract(by_image.box, by_bytes.box)).max() <= 2
    assert np.abs(by_image.digit.astype(int) - by_bytes.digit).max() <= 8
