"""IDX parsing on small files built here; the download path against a loopback server with real files."""

import gzip
import hashlib

import numpy as np
import pytest
from conftest import SHARED_MNIST, idx_bytes

from mnist_softmax.download import FILES, FileSpec, decode_body, ensure_files, fetch_file
from mnist_softmax.errors import DataError, DownloadError
from mnist_softmax.idx import parse_idx, parse_mnist_file
from mnist_softmax.sources import sources

# ---------------------------------------------------------------------------------------------- parsing


def test_parse_idx_round_trip_uint8():
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    out = parse_idx(idx_bytes(arr), "x")
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("code,dtype", [(0x09, "i1"), (0x0B, ">i2"), (0x0C, ">i4"), (0x0D, ">f4"), (0x0E, ">f8")])
def test_parse_idx_other_dtypes_are_big_endian(code, dtype):
    arr = np.array([[-3, 7], [1000 if dtype != "i1" else 100, 0]], dtype=dtype)
    np.testing.assert_array_equal(parse_idx(idx_bytes(arr, code), "x"), arr)


@pytest.mark.parametrize(
    "buf,message",
    [
        (b"", "only 0 bytes"),
        (b"\x01\x00\x08\x01" + b"\x00" * 8, "bad magic"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "unknown IDX data type"),
        (b"\x00\x00\x08\x00", "zero dimensions"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", "3"),
        (b"\x00\x00\x08\x01\xff\xff\xff\xff", "4294967295"),  # a lying header: no huge allocation
    ],
)
def test_parse_idx_rejects_bad_files_naming_them(buf, message):
    with pytest.raises(DataError, match=message) as e:
        parse_idx(buf, "broken-file")
    assert "broken-file" in str(e.value)


def test_parse_idx_rejects_trailing_bytes():
    with pytest.raises(DataError, match="has 5"):
        parse_idx(idx_bytes(np.zeros(4, np.uint8)) + b"!", "f")


def test_parse_mnist_file_checks_shapes_and_labels():
    good = np.zeros((2, 28, 28), np.uint8)
    assert parse_mnist_file(idx_bytes(good), "t-images").shape == (2, 28, 28)
    with pytest.raises(DataError, match=r"\(n, 28, 28\)"):
        parse_mnist_file(idx_bytes(np.zeros((2, 27, 28), np.uint8)), "t-images")
    with pytest.raises(DataError, match="outside 0..9"):
        parse_mnist_file(idx_bytes(np.array([3, 10], np.uint8)), "t-labels")
    with pytest.raises(DataError, match="unsigned bytes"):
        parse_mnist_file(idx_bytes(np.array([3], ">i4"), 0x0C), "t-labels")


# ---------------------------------------------------------------------------------------------- bodies


def _spec_for(raw: bytes) -> FileSpec:
    return FileSpec(hashlib.sha256(raw).hexdigest(), len(raw), ())


def test_decode_body_accepts_gzip_and_raw_verified_bytes():
    raw = idx_bytes(np.arange(10, dtype=np.uint8))
    spec = _spec_for(raw)
    assert decode_body(gzip.compress(raw), spec) == raw
    assert decode_body(raw, spec) == raw


@pytest.mark.parametrize(
    "body,reason",
    [
        (b"<!doctype html><html>nope</html>", "HTML page"),
        (b"PK\x03\x04zip", "neither gzip nor IDX"),
        (gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07"), "checksum mismatch"),
        (gzip.compress(b"\x00" * 1000), "more than the expected"),
        (gzip.compress(b"\x00" * 19)[:-12], "truncated"),
    ],
)
def test_decode_body_rejects_bad_bodies(body, reason):
    spec = _spec_for(idx_bytes(np.arange(10, dtype=np.uint8)))
    with pytest.raises(ValueError, match=reason):
        decode_body(body, spec)


def test_sources_order_flags_then_env_then_defaults():
    s = sources(["A"], env={"MNIST_SOFTMAX_MIRROR": "B, C"})
    assert s[:3] == ["A", "B", "C"]
    assert s[3].startswith("https://storage.googleapis.com/")
    assert len(s) == 6


# ---------------------------------------------------------------------------------------------- download


def test_download_over_http_verifies_and_stores_decompressed(mnist_dir):
    for name, spec in FILES.items():
        data = (mnist_dir / name).read_bytes()
        assert len(data) == spec.size and hashlib.sha256(data).hexdigest() == spec.sha256
    assert not list(mnist_dir.glob(".*")), "no temp files left behind"


def test_bad_sources_fall_through_to_a_good_one(mnist_server, tmp_path):
    server, url = mnist_server
    srcs = [f"{url}/404/", f"{url}/503/", f"{url}/html/", f"{url}/good/"]
    data = fetch_file("t10k-labels-idx1-ubyte", tmp_path, srcs, retries=0, quiet=True)
    assert hashlib.sha256(data).hexdigest() == FILES["t10k-labels-idx1-ubyte"].sha256
    assert (tmp_path / "t10k-labels-idx1-ubyte").read_bytes() == data


def test_all_sources_failing_lists_each_with_its_reason(mnist_server, tmp_path):
    _, url = mnist_server
    srcs = [f"{url}/404/", f"{url}/html/", str(tmp_path / "nowhere")]
    with pytest.raises(DownloadError) as e:
        fetch_file("t10k-labels-idx1-ubyte", tmp_path, srcs, retries=0, quiet=True)
    msg = str(e.value)
    assert f"{url}/404/: HTTP 404" in msg and f"{url}/html/: got an HTML page" in msg and "nowhere" in msg
    assert "--mirror" in msg
    assert not (tmp_path / "t10k-labels-idx1-ubyte").exists()


def test_local_folder_and_file_url_mirrors(tmp_path):
    name = "t10k-labels-idx1-ubyte"
    for i, src in enumerate([str(SHARED_MNIST), SHARED_MNIST.as_uri()]):
        d = tmp_path / str(i)
        d.mkdir()
        fetch_file(name, d, [src], quiet=True)
        assert hashlib.sha256((d / name).read_bytes()).hexdigest() == FILES[name].sha256


def test_valid_cached_files_are_not_fetched_again(mnist_server, mnist_dir):
    server, url = mnist_server
    before = len(server.hits)
    ensure_files(mnist_dir, [f"{url}/good/"], quiet=True)
    assert len(server.hits) == before


@pytest.mark.parametrize("damage", ["bit flip", "truncated"])
def test_damaged_cached_file_is_fetched_again_with_a_message(mnist_server, tmp_path, damage):
    _, url = mnist_server
    name = "t10k-labels-idx1-ubyte"
    for other in FILES:  # everything else valid, copied from the local mirror
        if other != name:
            fetch_file(other, tmp_path, [str(SHARED_MNIST)], quiet=True)
    good = fetch_file(name, tmp_path, [str(SHARED_MNIST)], quiet=True)
    damaged = bytearray(good)
    if damage == "bit flip":
        damaged[5000] ^= 1
    else:
        del damaged[7000:]
    (tmp_path / name).write_bytes(bytes(damaged))
    messages = []
    bufs = ensure_files(tmp_path, [f"{url}/good/"], quiet=True, log=messages.append)
    assert bufs[name] == good and (tmp_path / name).read_bytes() == good
    assert len(messages) == 1 and "damaged" in messages[0] and name in messages[0]


def test_load_mnist_gives_the_official_shapes(mnist):
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.train_images.dtype == np.uint8
    assert mnist.test_images.shape == (10000, 28, 28)
    assert mnist.train_labels.shape == (60000,) and mnist.test_labels.shape == (10000,)
    assert np.bincount(mnist.test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
