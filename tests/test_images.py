"""images.py on the images of issue 12: phone photos, tight crops, canvas drawings, tiny images,
images with no digit, 32-bit TIFFs, and reading a folder in parallel."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from userstyle import KEEP, MAKERS, MARGIN, NEGATIVES, NEW_STYLES, SMALL_8x8

from mnist_softmax.checkpoint import load_checkpoint
from mnist_softmax.images import ImageError, composite, label, prepare, to_mnist
from mnist_softmax.model import classify
from mnist_softmax.predict import to_mnist_many


@pytest.fixture(scope="module")
def pixel_model(trained):
    cwd, _ = trained
    return load_checkpoint(cwd / "runs" / "latest" / "model.npz")[0]


@pytest.fixture(scope="module")
def conv_model(conv_trained):
    return load_checkpoint(conv_trained / "model.npz")[0]


@pytest.mark.parametrize("style", NEW_STYLES)
def test_new_styles_are_read_like_the_digits_themselves(style, pixel_model, conv_model, mnist, tmp_path):
    rng = np.random.default_rng(zlib.crc32(style.encode()))
    idx = rng.choice(10000, 120, replace=False)
    paths = [MAKERS[style](mnist.test_images[i], tmp_path, f"{i}", rng) for i in idx]
    results = list(to_mnist_many(paths, workers=1))
    refused = [str(r) for r in results if isinstance(r, ImageError)]
    assert not refused, refused[:3]
    digits, labels = np.stack([r.digit for r in results]), mnist.test_labels[idx]
    pixel_acc = np.mean(classify(pixel_model, digits).argmax(1) == labels)
    if style.startswith("8×8"):
        conv_acc = np.mean(classify(conv_model, digits).argmax(1) == labels)
        assert pixel_acc >= SMALL_8x8["pixels"] - MARGIN, f"{style}: pixels {pixel_acc:.3f}"
        assert conv_acc >= SMALL_8x8["conv"] - MARGIN, f"{style}: conv {conv_acc:.3f}"
    else:
        untouched = np.mean(classify(pixel_model, mnist.test_images[idx]).argmax(1) == labels)
        assert pixel_acc >= KEEP * untouched - MARGIN, f"{style}: {pixel_acc:.3f}, untouched {untouched:.3f}"


@pytest.mark.parametrize("kind", list(NEGATIVES))
def test_images_without_a_digit_are_refused(kind, tmp_path):
    rng = np.random.default_rng(zlib.crc32(kind.encode()))
    for k in range(30):
        path = NEGATIVES[kind](tmp_path, f"{k}", rng)
        with pytest.raises(ImageError, match=r"no digit found \(") as e:
            to_mnist(path)
        assert str(e.value).startswith(f"{path}: no digit found (")


def test_each_refusal_rule_names_itself(tmp_path):
    page = np.full((280, 280), 235, np.uint8)
    speck = page.copy()
    speck[100:106, 140:146] = 30
    line = page.copy()
    line[60:220, 140] = 30
    blot = page.copy()
    blot[80:200, 80:200] = 30
    bar = page.copy()
    bar[120:150, 20:260] = 30
    cases = {"blank": page, "a speck": speck, "too thin": line, "a blot": blot, "a line": bar}
    for reason, img in cases.items():
        Image.fromarray(img).save(tmp_path / "x.png")
        with pytest.raises(ImageError, match=rf"no digit found \({reason}"):
            to_mnist(tmp_path / "x.png")


def test_exif_orientation_is_applied(mnist, tmp_path):
    upright = Image.fromarray(255 - mnist.test_images[0]).resize((112, 168))  # a 7, taller than wide
    upright.save(tmp_path / "upright.jpg", quality=95)
    want = to_mnist(tmp_path / "upright.jpg").digit
    for orientation, stored in ((6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270)):
        exif = Image.Exif()
        exif[0x0112] = orientation
        upright.transpose(stored).save(tmp_path / f"o{orientation}.jpg", quality=95, exif=exif)
        got = to_mnist(tmp_path / f"o{orientation}.jpg")
        assert got.box[1] - got.box[0] > got.box[3] - got.box[2]  # read upright: taller than wide
        assert np.abs(got.digit.astype(int) - want).mean() < 3  # the same digit, up to JPEG noise


def test_small_images_are_enlarged_smoothly(mnist, tmp_path):
    small = Image.fromarray(mnist.test_images[0][4:24, 4:24]).resize((8, 8), Image.Resampling.BOX)
    small.save(tmp_path / "small.png")
    digit = to_mnist(tmp_path / "small.png").digit
    rows, cols = np.flatnonzero(digit.any(1)), np.flatnonzero(digit.any(0))
    assert max(rows[-1] + 1 - rows[0], cols[-1] + 1 - cols[0]) >= 19  # scaled up to the 20-px box
    assert len(np.unique(digit)) > 40  # interpolated, not 8×8 blocks of a few grey levels


def _tiff_32bit(path, a: np.ndarray) -> None:
    """A grey, unsigned 32-bit integer TIFF, written by hand: Pillow writes only signed ones."""
    data = np.ascontiguousarray(a.astype("<u4")).tobytes()
    h, w = a.shape
    tags = [(256, 4, w), (257, 4, h), (258, 3, 32), (259, 3, 1), (262, 3, 1), (273, 4, 8)]
    tags += [(277, 3, 1), (278, 4, h), (279, 4, len(data)), (339, 3, 1)]
    ifd = struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        ifd += struct.pack("<HHI", tag, kind, 1) + struct.pack(
            "<HH" if kind == 3 else "<I", *((value, 0) if kind == 3 else (value,))
        )
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8 + len(data)) + data + ifd + struct.pack("<I", 0))


def test_32bit_integer_tiffs_are_read(pixel_model, mnist, tmp_path):
    d = mnist.test_images[0].astype(np.float64) / 255  # a 7
    big = np.asarray(Image.fromarray(mnist.test_images[0]).resize((84, 84)), np.float64) / 255
    _tiff_32bit(tmp_path / "unsigned.tif", 4.0e9 - 3.9e9 * big)  # beyond 2**31: negative as int32
    Image.fromarray((2.0e9 * d).astype(np.int32), "I").save(tmp_path / "signed.tif")
    for name in ("unsigned.tif", "signed.tif"):
        prepared = to_mnist(tmp_path / name)
        assert classify(pixel_model, prepared.digit[None]).argmax() == 7, name
    assert to_mnist(tmp_path / "unsigned.tif").inverted and not to_mnist(tmp_path / "signed.tif").inverted


def test_float_tiffs_are_stretched_whatever_their_range(pixel_model, mnist, tmp_path):
    """Floats in [0, 1] are read as they are; others have no white point and are stretched from
    their least to their greatest, in float64, so values near float32's limits (±3.4e38) neither
    overflow nor warn; NaN and ±inf take the nearest finite end."""
    import warnings

    d = np.asarray(Image.fromarray(mnist.test_images[0]).resize((84, 84)), np.float64) / 255  # a 7
    ranges = {"unit": (0.0, 1.0), "wide": (-3e38, 3e38), "large": (0.0, 1e4), "negative": (-5.0, -1.0)}
    for name, (lo, hi) in ranges.items():
        a = (lo + (hi - lo) * d).astype(np.float32)
        if name == "unit":
            a[0, :3] = [np.nan, np.inf, -np.inf]
        Image.fromarray(a, "F").save(tmp_path / f"{name}.tif")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            prepared = to_mnist(tmp_path / f"{name}.tif")
        assert classify(pixel_model, prepared.digit[None]).argmax() == 7 and not prepared.inverted, name


def test_to_mnist_many_keeps_order_and_errors(mnist, tmp_path):
    paths = []
    for k in range(12):
        paths.append(tmp_path / f"{k}.png")
        Image.fromarray(mnist.test_images[k]).save(paths[-1])
    paths.insert(5, tmp_path / "missing.png")
    Image.new("L", (40, 40), 200).save(tmp_path / "blank.png")
    paths.insert(9, tmp_path / "blank.png")
    results = list(to_mnist_many(paths, workers=2))
    alone = [to_mnist_many([p]) for p in paths]
    assert len(results) == len(paths)
    for path, got, one in zip(paths, results, alone, strict=True):
        one = next(one)
        if path.name in ("missing.png", "blank.png"):
            assert isinstance(got, ImageError) and str(got) == str(one) and str(path) in str(got)
        else:
            np.testing.assert_array_equal(got.digit, one.digit)


@pytest.mark.parametrize("dies", ["once", "always"])
def test_a_worker_process_that_dies_costs_nothing_already_read(dies, mnist, tmp_path, monkeypatch):
    """A worker killed once (by a user, the OOM killer) is replaced and every image still read; a
    file that kills every worker that reads it gets its own error, and the rest are read."""
    import os
    import signal

    import mnist_softmax.images.mnist_form as images_mod

    paths = []
    for k in range(40):
        paths.append(tmp_path / f"{k:02d}.png")
        Image.fromarray(mnist.test_images[k]).save(paths[-1])
    deadly, marker = paths[17], tmp_path / "killed-once"
    real = images_mod.to_mnist

    def dying(path):  # what the (forked) worker processes call for each image
        if path == deadly and (dies == "always" or not marker.exists()):
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path)

    monkeypatch.setattr(images_mod, "to_mnist", dying)
    results = list(to_mnist_many(paths, workers=2))
    assert len(results) == len(paths) and marker.exists()
    for path, got in zip(paths, results, strict=True):
        if path == deadly and dies == "always":
            want = f"{path}: a worker process died while reading this image (killed by SIGKILL)"
            assert isinstance(got, ImageError) and str(got) == want
        else:
            np.testing.assert_array_equal(got.digit, real(path).digit)


def _flood_labels(mask: np.ndarray) -> list[set]:
    """Components of mask (8-connected) by breadth-first search: the independent reference."""
    seen, comps = np.zeros_like(mask), []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        comp, todo = set(), [start]
        seen[start] = True
        while todo:
            r, c = todo.pop()
            comp.add((r, c))
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    q = (r + dr, c + dc)
                    if 0 <= q[0] < mask.shape[0] and 0 <= q[1] < mask.shape[1] and mask[q] and not seen[q]:
                        seen[q] = True
                        todo.append(q)
        comps.append(comp)
    return comps


@pytest.mark.parametrize("density", [0.2, 0.45, 0.6])
def test_label_finds_the_8_connected_components(density):
    rng = np.random.default_rng(int(density * 100))
    for _ in range(20):
        mask = rng.random((int(rng.integers(1, 30)), int(rng.integers(1, 30)))) < density
        labels, n = label(mask)
        want = _flood_labels(mask)
        assert n == len(want) and ((labels > 0) == mask).all()
        got = [set(zip(*np.nonzero(labels == i), strict=True)) for i in range(1, n + 1)]
        assert sorted(map(sorted, got)) == sorted(map(sorted, want))


def test_a_ruled_line_beside_the_digit_stays_out_of_its_box(mnist, tmp_path):
    """A notebook's red margin line next to the digit is a line of the paper, not a stroke."""
    from PIL import Image

    from mnist_softmax.images import to_mnist

    for i in range(12):
        big = np.asarray(Image.fromarray(mnist.test_images[i]).resize((224, 224), Image.Resampling.BILINEAR)) / 255
        page = np.full((360, 360, 3), 248.0)
        cover = np.zeros((360, 360))
        cover[70:294, 80:304] = big
        clean = page + (np.array([30.0, 30, 90]) - page) * cover[..., None]
        lined = page.copy()
        lined[:, 60:62] = [230, 120, 120]
        lined = lined + (np.array([30.0, 30, 90]) - lined) * cover[..., None]
        for name, img in (("clean", clean), ("lined", lined)):
            Image.fromarray(img.astype(np.uint8)).save(tmp_path / f"{name}{i}.png")
        a, b = to_mnist(tmp_path / f"clean{i}.png"), to_mnist(tmp_path / f"lined{i}.png")
        assert abs(np.array(a.box) - np.array(b.box)).max() <= 2, (i, a.box, b.box)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "RGBa", "PA"])
def test_transparent_images_are_read_and_composited_as_the_formula_says(mode):
    """Pillow parts colour from alpha (fast); the numbers are those of the pixels divided by 255,
    and compositing puts dark ink on white (1 + (colour − 1)·alpha), light ink on black."""
    from mnist_softmax.images.decode import _to_arrays

    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (37, 53, len(mode)), np.uint8)
    im = Image.frombytes(mode, (53, 37), raw.tobytes())
    if mode == "PA":
        im.putpalette(rng.integers(0, 256, 768).tolist())
    pixels = np.asarray(im.convert("RGBA") if mode == "PA" else im)
    expected = np.multiply(pixels, np.float32(1 / 255), dtype=np.float32)
    colour, alpha = _to_arrays(im)
    np.testing.assert_array_equal(colour, expected[..., :-1])
    np.testing.assert_array_equal(alpha, expected[..., -1])
    for level in (0.1, 0.9):  # dark strokes onto white, light strokes onto black
        c = np.full_like(colour, np.float32(level))
        a = alpha[..., None]
        want = (c - np.float32(1)) * a + np.float32(1) if level < 0.5 else c * a
        np.testing.assert_array_equal(composite(c, alpha), want)


def test_one_process_reads_with_one_blas_thread_and_gives_the_caller_back_its_own(mnist, tmp_path, monkeypatch):
    """BLAS threads only spin beside the pipeline's small products: predict in one process keeps
    one core busy, not two; the caller's own limit is untouched between images."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from mnist_softmax import predict as pool

    def blas_threads():
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    # The caller's own setting: two threads, so that one inside is seen whatever this machine has.
    limit = threadpool_limits(2, user_api="blas")
    before = blas_threads()
    assert before and all(n == 2 for n in before)
    seen = []
    real = pool.to_mnist_or_error
    monkeypatch.setattr(pool, "to_mnist_or_error", lambda p: (seen.append(blas_threads()), real(p))[1])
    paths = []
    for k in range(3):
        paths.append(tmp_path / f"{k}.png")
        Image.fromarray(mnist.test_images[k]).save(paths[-1])
    try:
        for result in to_mnist_many(paths, workers=1):
            assert blas_threads() == before and not isinstance(result, ImageError)
    finally:
        limit.restore_original_limits()
    assert len(seen) == 3 and all(threads and all(n == 1 for n in threads) for threads in seen)


def test_a_strip_one_block_high_is_read_the_same_whatever_its_memory_layout():
    """A view one block high has one row coordinate: a tilt along it would rest on rounding noise,
    and the result on how the pixels sit in memory. It is not fitted, so a grey strip reads the
    same as float32 or float64, C or Fortran order, or as three equal colour channels."""
    rng = np.random.default_rng(1)
    for _ in range(40):
        H = int(rng.integers(3, 8))
        W = max(int(rng.integers(300, 800)), 64 * H)
        img = 0.9 - rng.uniform(0, 0.4) * np.linspace(0, 1, W)[None, :] + 0.02 * rng.standard_normal((H, W))
        c0 = int(rng.integers(0, W - 40))
        img[:, c0 : c0 + int(rng.integers(3, 40))] = rng.uniform(0, 0.3)
        img = np.clip(img, 0, 1).astype(np.float32)
        seen = set()
        for a in (img, np.asfortranarray(img), img.astype(np.float64), np.repeat(img[..., None], 3, 2)):
            try:
                seen.add(str(prepare(a if a.ndim == 3 else a[..., None], None).box))
            except ImageError as e:
                seen.add(str(e))
        assert len(seen) == 1, seen


@pytest.mark.parametrize("where", ["colour", "alpha"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_pixels_that_are_not_finite_are_refused_naming_the_argument(where, bad):
    import warnings

    from mnist_softmax.images import prepare

    colour = np.ones((40, 40, 1), np.float32)
    colour[10:30, 18:22] = 0.0  # a 1
    alpha = np.ones((40, 40), np.float32)
    (colour if where == "colour" else alpha)[5, 5] = bad
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=f"^{where} holds NaN or infinite values"):
            prepare(colour, alpha)
