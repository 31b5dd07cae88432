"""Faults: misbehaving mirrors, interrupted downloads and training, bad files, full disks.

Every download case runs against the loopback server in conftest.py, which misbehaves on purpose.
"""

import contextlib
import errno
import hashlib
import os
import signal
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import idx_bytes, interrupt_call, run, served_file, signal_training
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist_softmax import download as download_mod
from mnist_softmax import sources as sources_mod
from mnist_softmax import watched_http
from mnist_softmax.checkpoint import load_checkpoint
from mnist_softmax.cli import main
from mnist_softmax.config import make_config
from mnist_softmax.download import FILES, _part_path, fetch_file
from mnist_softmax.errors import DataError, DownloadError
from mnist_softmax.idx import parse_idx, parse_mnist_file
from mnist_softmax.runs import new_run_dir
from mnist_softmax.train import TrainingInterrupted, fit

SMALL = "t10k-labels-idx1-ubyte"  # 4.5 kB gzipped
FILES_FIRST = next(iter(FILES))  # the file ensure_files fetches first
BIG = "t10k-images-idx3-ubyte"  # 1.6 MB gzipped: a reset mid-file leaves a real partial file
FAST = {"timeout": (2.0, 0.5), "backoff": 0.01, "quiet": True}


def _sha(b):
    return hashlib.sha256(b).hexdigest()


# ------------------------------------------------------------------------------------------ download


@pytest.mark.parametrize(
    "mode,reason",
    [
        ("403", "HTTP 403"),
        ("404", "HTTP 404"),
        ("500", "HTTP 500"),
        ("503", "HTTP 503"),
        ("html", "got an HTML page"),
        ("reset", "network error"),
        ("short", "network error"),
        ("stall", "too slow: nothing for 0.5 s"),  # headers, then no body: a stall
        ("wronggz", "checksum mismatch"),
        ("notgz", "got neither gzip nor IDX"),
    ],
)
def test_each_fault_falls_through_and_never_writes_bad_content(mnist_server, tmp_path, mode, reason):
    _, url = mnist_server
    with pytest.raises(DownloadError) as e:
        fetch_file(SMALL, tmp_path, [f"{url}/{mode}/"], retries=1, **FAST)
    assert f"{url}/{mode}/: {reason}" in str(e.value)
    assert not (tmp_path / SMALL).exists()
    got = fetch_file(SMALL, tmp_path, [f"{url}/{mode}/", f"{url}/good/"], retries=1, **FAST)
    assert _sha(got) == FILES[SMALL].sha256 == _sha((tmp_path / SMALL).read_bytes())
    assert not list(tmp_path.glob(".*")), "partial or temp files left behind"


@pytest.mark.parametrize("mode,reason", [("endless", "sent more than"), ("biglength", "announces 600000000 bytes")])
def test_a_body_longer_than_the_file_can_be_is_cut_off(mnist_server, tmp_path, mode, reason):
    _, url = mnist_server
    with pytest.raises(DownloadError, match=reason):
        fetch_file(SMALL, tmp_path, [f"{url}/{mode}/"], retries=0, **FAST)
    assert not list(tmp_path.iterdir()), "nothing kept of a body that could not be the file"


def test_a_trickling_server_is_cut_off(mnist_server, tmp_path):
    """A byte every 0.2 s never trips the read timeout (0.5 s here): the stall watch cuts it off."""
    _, url = mnist_server
    with pytest.raises(DownloadError, match="too slow: no 64 kB in 1 s"):
        fetch_file(SMALL, tmp_path, [f"{url}/trickle/"], retries=0, stall=1.0, **FAST)
    got = fetch_file(SMALL, tmp_path, [f"{url}/trickle/", f"{url}/good/"], retries=0, stall=1.0, **FAST)
    assert _sha(got) == FILES[SMALL].sha256


def test_a_server_trickling_its_headers_is_cut_off(mnist_server, tmp_path):
    """The stall watch starts with the request: headers a byte at a time are cut off as a body is."""
    _, url = mnist_server
    started = time.monotonic()
    with pytest.raises(DownloadError, match="headtrickle/: too slow: no complete answer in 1 s"):
        fetch_file(SMALL, tmp_path, [f"{url}/headtrickle/"], retries=2, stall=1.0, **FAST)
    assert time.monotonic() - started < 10  # once, not once per retry; the server would go on for 20 s


def test_a_server_cut_off_by_the_stall_watch_is_not_asked_again(mnist_server, tmp_path):
    """Cutting the socket breaks the request the way a hang-up does, which urllib3 retries: the
    retry's connection is refused at once, so a silent server costs one stall limit, asked once."""
    server, url = mnist_server
    before, started = len(server.hits), time.monotonic()
    with pytest.raises(DownloadError, match="silent/: too slow: no complete answer in 1 s"):
        fetch_file(SMALL, tmp_path, [f"{url}/silent/"], retries=2, stall=1.0, **{**FAST, "timeout": (2.0, 30.0)})
    assert [h[0] for h in server.hits[before:]] == ["silent"]
    assert time.monotonic() - started < 2.5  # the server stays silent for 3 s


def test_a_timeout_is_not_retried_by_urllib3():
    """Neither a connection never taken nor a request never answered is asked again: each retry
    would cost the whole timeout. A refused connection is retried (it costs nothing)."""
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError

    from mnist_softmax.watched_http import retry_class

    retry = retry_class()(total=2)
    for error in (ConnectTimeoutError("connect timed out"), ReadTimeoutError(None, "/", "read timed out")):
        with pytest.raises(type(error)):
            retry.increment("GET", "/", error=error)
    assert retry.increment("GET", "/", error=NewConnectionError(None, "refused")).total == 1


def test_a_source_that_never_answers_is_skipped_for_the_other_files(mnist_server, tmp_path, monkeypatch):
    from mnist_softmax.download import ensure_files

    server, url = mnist_server
    monkeypatch.setattr(sources_mod, "DEFAULT_SOURCES", ())
    before = len(server.hits)
    ensure_files(tmp_path, [f"{url}/silent/", f"{url}/good/"], quiet=True, retries=0, timeout=(2.0, 0.5))
    silent = [h for h in server.hits[before:] if h[0] == "silent"]
    assert len(silent) == 1, silent  # asked once, then skipped for the three other files


def test_a_silent_source_is_asked_once_even_with_retries_left(mnist_server, tmp_path, monkeypatch):
    """A read timeout is not retried: each retry of a server that stays silent costs a whole timeout."""
    from mnist_softmax.download import ensure_files

    server, url = mnist_server
    monkeypatch.setattr(sources_mod, "DEFAULT_SOURCES", ())
    monkeypatch.setattr(watched_http, "SLOW_NOTICE_SECONDS", 0.2)
    before, lines = len(server.hits), []
    ensure_files(
        tmp_path, [f"{url}/silent/", f"{url}/good/"], quiet=True, retries=2, timeout=(2.0, 0.5), log=lines.append
    )
    assert [h[0] for h in server.hits[before:]].count("silent") == 1
    first = next(iter(FILES))
    assert lines == [  # said as it happens: still waiting, then given up, and which source comes next
        f"{url}/silent/{first}.gz has not answered for 0.2 s; it is given up once 0.5 s pass without an answer",
        f"{url}/silent/: network error: no answer in time; trying {url}/good/ for {first}",
    ]


def test_a_stalled_source_costs_one_stall_limit_in_all_and_says_so_at_once(mnist_server, tmp_path, monkeypatch):
    """A trickling source is cut off after the stall limit once, then skipped for every other file;
    the user is told which source is slow before the limit, and which source comes next."""
    from mnist_softmax.download import ensure_files

    server, url = mnist_server
    monkeypatch.setattr(sources_mod, "DEFAULT_SOURCES", ())
    monkeypatch.setattr(watched_http, "SLOW_NOTICE_SECONDS", 0.5)
    lines = []
    before = len(server.hits)
    ensure_files(
        tmp_path, [f"{url}/trickle/", f"{url}/good/"], quiet=True, retries=2, stall=2.0, timeout=(2.0, 1.0),
        backoff=0.01, log=lines.append,
    )  # fmt: skip
    assert [h[0] for h in server.hits[before:]].count("trickle") == 1  # one stall limit, not one per file and retry
    assert (
        lines[0]
        == f"{url}/trickle/{FILES_FIRST}.gz is slow: nothing for 0.5 s; it is cut off once 2 s pass without 64 kB"
    )
    assert lines[1] == f"{url}/trickle/: too slow: no 64 kB in 2 s; trying {url}/good/ for {FILES_FIRST}"


@pytest.mark.parametrize("read_timeout", [1.0, 2.0])
def test_half_a_file_then_silence_is_one_stall_and_that_source_is_not_asked_again(
    mnist_server, tmp_path, monkeypatch, read_timeout
):
    """The socket's read timeout and the stall watch both end a body that stops coming; whichever comes
    first, it is one stall: the source is not asked again, for this file (no resume) or the next."""
    from mnist_softmax.download import ensure_files

    server, url = mnist_server
    monkeypatch.setattr(sources_mod, "DEFAULT_SOURCES", ())
    monkeypatch.setattr(watched_http, "SLOW_NOTICE_SECONDS", 30)
    lines = []
    before = len(server.hits)
    ensure_files(
        tmp_path, [f"{url}/halfsilent/", f"{url}/good/"], quiet=True, retries=2, stall=2.0,
        timeout=(2.0, read_timeout), backoff=0.01, log=lines.append,
    )  # fmt: skip
    assert [h[0] for h in server.hits[before:]].count("halfsilent") == 1
    assert lines[0].startswith(f"{url}/halfsilent/: too slow: ") and lines[0].endswith(
        f"trying {url}/good/ for {FILES_FIRST}"
    )


def test_the_slow_notice_says_how_the_limit_is_measured(mnist_server, tmp_path, monkeypatch):
    """A source sending slowly is told of as it happens, with the limit as it is measured: per 64 kB."""
    from mnist_softmax.download import ensure_files

    server, url = mnist_server
    monkeypatch.setattr(sources_mod, "DEFAULT_SOURCES", ())
    monkeypatch.setattr(watched_http, "SLOW_NOTICE_SECONDS", 0.5)
    lines = []
    ensure_files(
        tmp_path, [f"{url}/trickle/", f"{url}/good/"], quiet=True, stall=2.0, timeout=(2.0, 1.0), log=lines.append
    )
    assert (
        lines[0]
        == f"{url}/trickle/{FILES_FIRST}.gz is slow: nothing for 0.5 s; it is cut off once 2 s pass without 64 kB"
    )


def test_credentials_in_a_mirror_url_are_never_shown(mnist_server, tmp_path, monkeypatch):
    from mnist_softmax.sources import redact

    _, url = mnist_server
    monkeypatch.setattr(sources_mod, "DEFAULT_SOURCES", ())
    secret = url.replace("http://", "http://alice:s3cret@") + "/404/"
    result = CliRunner().invoke(main, ["download", "--data-dir", str(tmp_path), "--mirror", secret, "-q"])
    assert result.exit_code == 1 and "s3cret" not in result.output and "alice" not in result.output
    assert url.replace("http://", "http://***@") + "/404/: HTTP 404" in result.output
    for bad in ("ftp://bob:pw@example.org/", "http://bob:pw@[::1"):
        refused = CliRunner().invoke(main, ["download", "--data-dir", str(tmp_path), "--mirror", bad, "-q"])
        assert refused.exit_code == 1 and "pw" not in refused.output and "***@" in refused.output
    for bad in ("http://u:p w@h.org/", "http://u:hunter2@h.org:port/"):
        refused = CliRunner().invoke(main, ["download", "--data-dir", str(tmp_path), "--mirror", bad, "-q"])
        assert refused.exit_code == 1 and "hun" not in refused.output and " w" not in refused.output, refused.output
        assert refused.output.startswith("Error: mirror 'http://***@"), refused.output
    for odd in ("hunter2?x", "hun#ter2", "hun/ter2"):  # sent percent-encoded: the host is the one after the @
        mirror = url.replace("http://", f"http://u:{odd}@") + "/404/"
        result = CliRunner().invoke(main, ["download", "--data-dir", str(tmp_path), "--mirror", mirror, "-q"])
        assert result.exit_code == 1 and "hun" not in result.output, result.output
        assert url.replace("http://", "http://***@") + "/404/: HTTP 404" in result.output
    assert redact("see https://u:p@h.org/x and http://t0ken@h/") == "see https://***@h.org/x and http://***@h/"
    assert redact("http://alice:p@ssw0rd@h.org/mnist/") == "http://***@h.org/mnist/"  # an @ in the password
    for parsed_as_a_port in ("http://u:12/secret@h.org/", "http://u:#secret@h.org/"):  # valid URLs, to urllib
        assert redact(f"mirror '{parsed_as_a_port}': failed") == "mirror 'http://***@h.org/': failed"
    assert redact("https://h.org/mnist/?token=abc#x and more") == "https://h.org/mnist/?***#x and more"
    assert redact("http://u:p@[::1") == "http://***@[::1"


# Every character a URL allows in a password (RFC 3986: unreserved, sub-delims, ":" and "%"), and those
# the WHATWG URL standard takes there by percent-encoding them (quotes, brackets, "@", "/", "?", "#", ...).
USERINFO = "-._~!$&'()*+,;=:%" + '"<>`{}|\\^[]@/?#'


@pytest.mark.parametrize("how", ["flag", "environment", "debug"])
def test_no_character_a_password_may_hold_lets_it_be_printed(mnist_server, tmp_path, monkeypatch, how):
    """For each such character in a mirror's password, given by --mirror, by $MNIST_SOFTMAX_MIRROR or
    with --debug (the traceback included), and in a URL mistyped with one slash: neither the user
    name nor any part of the password is printed."""
    import base64
    import traceback

    server, url = mnist_server
    monkeypatch.setattr(sources_mod, "DEFAULT_SOURCES", ())
    host = url.removeprefix("http://")
    for c in USERINFO:
        for mirror in (f"http://alice7:pa{c}ss-w0rd@{host}/404/", f"http:/alice7:pa{c}ss-w0rd@{host}/404/"):
            args = ["download", "--data-dir", str(tmp_path), "-q"]
            if how == "environment":
                monkeypatch.setenv("MNIST_SOFTMAX_MIRROR", mirror)
            else:
                args += ["--mirror", mirror]
            result = CliRunner().invoke(main, ["--debug", *args] if how == "debug" else args)
            shown = result.output
            if how == "debug" and result.exc_info is not None:
                shown += "".join(traceback.format_exception(*result.exc_info))
            assert result.exit_code != 0, (c, mirror)
            for secret in ("alice7", f"pa{c}ss", "ss-w0rd", "w0rd"):
                assert secret not in shown, (c, mirror, shown)
            assert "***@" in shown, (c, shown)
        if how != "debug":  # and the mirror got them as they were typed
            sent = server.authorizations[-1].removeprefix("Basic ")
            assert base64.b64decode(sent).decode() == f"alice7:pa{c}ss-w0rd", c


def test_a_comma_in_a_password_does_not_split_the_environments_sources():
    split = sources_mod._split_sources
    assert split("http://u:a,b@h/,http://x/ data1,data2") == ["http://u:a,b@h/", "http://x/", "data1", "data2"]
    assert split(" https://h/a/, ./copy ") == ["https://h/a/", "./copy"]


def test_the_default_retry_counts(mnist_server, tmp_path):
    """By default a source is asked 1 + 2 times for an HTTP 5xx, and a body cut off midway is taken
    up again twice; a permanent error is asked once."""
    server, url = mnist_server
    before = len(server.hits)
    with pytest.raises(DownloadError):
        fetch_file(SMALL, tmp_path, [f"{url}/503/", f"{url}/short/", f"{url}/404/"], quiet=True, backoff=0.01)
    hits = [h[0] for h in server.hits[before:]]
    assert (hits.count("503"), hits.count("short"), hits.count("404")) == (3, 3, 1)


def test_a_fifo_or_folder_where_the_partial_file_goes_is_dealt_with(mnist_server, tmp_path):
    _, url = mnist_server
    src = f"{url}/good/"
    part = _part_path(tmp_path, SMALL, f"{src}{SMALL}.gz")
    os.mkfifo(part)  # writing into it would block forever
    assert _sha(fetch_file(SMALL, tmp_path, [src], **FAST)) == FILES[SMALL].sha256
    (tmp_path / SMALL).unlink()
    part.mkdir()
    with pytest.raises(DownloadError, match="is a folder in the way"):
        fetch_file(SMALL, tmp_path, [src], **FAST)


@pytest.mark.parametrize(
    "mirror,message", [("", "a mirror given is empty"), ("~nosuchuser/mnist", "mirror '~nosuchuser/mnist'")]
)
def test_empty_or_unexpandable_mirrors_are_refused(tmp_path, mirror, message):
    result = CliRunner().invoke(main, ["download", "--data-dir", str(tmp_path), "--mirror", mirror, "-q"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and message in result.output


def test_a_malformed_mirror_is_refused_even_when_no_file_is_missing(mnist_dir):
    result = CliRunner().invoke(main, ["download", "--data-dir", str(mnist_dir), "--mirror", "http://[::1", "-q"])
    assert result.exit_code == 1 and "is not a valid URL" in result.output


def test_processes_filling_one_data_folder_take_turns(mnist_server, tmp_path):
    """Three fetches of one file at once (each flock on its own descriptor, as separate processes
    would): every one ends with the verified bytes, and the server is asked once."""
    server, url = mnist_server
    before = len(server.hits)
    got, errors = [], []

    def fetch():
        try:
            got.append(fetch_file(BIG, tmp_path, [f"{url}/slow/"], **FAST))
        except Exception as e:  # noqa: BLE001 -- collected and asserted on below
            errors.append(e)

    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(got) == 3 and all(_sha(g) == FILES[BIG].sha256 for g in got)
    assert len([h for h in server.hits[before:] if h[1] == f"{BIG}.gz"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == [BIG]


@pytest.mark.parametrize(
    "mirror,message",
    [
        ("http://[::1", "is not a valid URL"),
        ("ftp://example.org/mnist/", "only http://"),
        ("http:///x", "only http://"),
    ],
)
def test_malformed_or_unsupported_mirrors_are_one_line_naming_them(tmp_path, monkeypatch, mirror, message):
    result = CliRunner().invoke(main, ["download", "--data-dir", str(tmp_path), "--mirror", mirror, "-q"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert mirror in result.output and message in result.output
    monkeypatch.setenv("MNIST_SOFTMAX_MIRROR", mirror)
    result = CliRunner().invoke(main, ["download", "--data-dir", str(tmp_path), "-q"])
    assert result.exit_code == 1 and mirror in result.output and "Traceback" not in result.output


def test_retries_are_bounded(mnist_server, tmp_path):
    server, url = mnist_server
    before = len(server.hits)
    with pytest.raises(DownloadError):
        fetch_file(SMALL, tmp_path, [f"{url}/503/", f"{url}/404/"], retries=2, **FAST)
    hits = [h[0] for h in server.hits[before:]]
    assert hits.count("503") == 3 and hits.count("404") == 1  # transient: 1 + 2 retries; permanent: once


def test_backoff_waits_between_retries(mnist_server, tmp_path):
    _, url = mnist_server
    t = time.perf_counter()
    with pytest.raises(DownloadError):
        fetch_file(SMALL, tmp_path, [f"{url}/503/"], retries=2, timeout=(2, 2), backoff=0.2, quiet=True)
    assert time.perf_counter() - t >= 0.4  # urllib3's schedule: at once, then 2·backoff


def test_reset_mid_file_resumes_with_a_range_request(mnist_server, tmp_path):
    server, url = mnist_server
    before = len(server.hits)
    got = fetch_file(BIG, tmp_path, [f"{url}/flaky/"], retries=2, **FAST)
    assert _sha(got) == FILES[BIG].sha256
    hits = [h for h in server.hits[before:] if h[1] == f"{BIG}.gz"]
    assert hits[0][2] is None and hits[1][2] is not None and hits[1][2].startswith("bytes=")
    # It continued where the reset left it (how much arrived before the reset varies: the kernel
    # drops buffered data on a reset), rather than starting again from byte 0.
    assert 0 < int(hits[1][2][6:-1]) < served_file(f"{BIG}.gz").stat().st_size


def test_server_without_range_support_starts_over_cleanly(mnist_server, tmp_path):
    server, url = mnist_server
    src = f"{url}/norange/"
    _part_path(tmp_path, SMALL, f"{src}{SMALL}.gz").write_bytes(b"\x1f\x8b half of something else")
    before = len(server.hits)
    got = fetch_file(SMALL, tmp_path, [src], **FAST)
    assert _sha(got) == FILES[SMALL].sha256
    assert server.hits[before][2] is not None  # it asked to resume; the server sent it all again
    assert not list(tmp_path.glob(".*"))


def test_bad_partial_file_is_discarded_and_fetched_from_scratch(mnist_server, tmp_path):
    _, url = mnist_server
    src = f"{url}/good/"
    _part_path(tmp_path, SMALL, f"{src}{SMALL}.gz").write_bytes(b"\x1f\x8bnot the right prefix at all")
    assert _sha(fetch_file(SMALL, tmp_path, [src], **FAST)) == FILES[SMALL].sha256


def test_ctrl_c_during_download_leaves_no_final_file_and_the_next_run_resumes(mnist_server, tmp_path, monkeypatch):
    server, url = mnist_server

    class Interrupting:
        def __init__(self, *a, **k):
            self.n = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, k):
            self.n += k
            if self.n > 400_000:
                raise KeyboardInterrupt

    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(download_mod, "_progress", Interrupting)
        fetch_file(BIG, tmp_path, [f"{url}/good/"], **FAST)
    assert not (tmp_path / BIG).exists()
    parts = list(tmp_path.glob(f".{BIG}.*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size > 400_000
    kept = parts[0].stat().st_size
    before = len(server.hits)
    assert _sha(fetch_file(BIG, tmp_path, [f"{url}/good/"], **FAST)) == FILES[BIG].sha256
    assert server.hits[before][2] == f"bytes={kept}-"  # the next run continued from the partial file
    assert not list(tmp_path.glob(".*"))


# ------------------------------------------------------------------------------------------ IDX parser


def _valid_idx():
    return st.builds(
        lambda shape, code: idx_bytes(
            np.zeros(shape, {8: "u1", 9: "i1", 11: ">i2", 12: ">i4", 13: ">f4", 14: ">f8"}[code]), code
        ),
        st.lists(st.integers(0, 5), min_size=1, max_size=3).map(tuple),
        st.sampled_from([8, 9, 11, 12, 13, 14]),
    )


def _check_parse(buf):
    try:
        arr = parse_idx(buf, "fuzz")
    except DataError as e:
        assert "fuzz" in str(e)
        return
    header = 4 + 4 * buf[3]
    assert arr.nbytes == len(buf) - header  # exactly the bytes present: no allocation beyond them


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=64))
def test_idx_parser_on_random_bytes_returns_arrays_or_its_own_error(buf):
    _check_parse(buf)


@settings(max_examples=300, deadline=None)
@given(_valid_idx(), st.lists(st.tuples(st.integers(0, 40), st.integers(0, 255)), max_size=4), st.integers(-8, 8))
def test_idx_parser_on_mutated_files(buf, flips, cut):
    b = bytearray(buf)
    for pos, val in flips:
        if pos < len(b):
            b[pos] = val
    b = bytes(b[:cut] if cut < 0 else b + b"\x00" * cut)
    _check_parse(b)
    with contextlib.suppress(DataError):
        parse_mnist_file(b, "fuzz-images")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(2**20, 2**32 - 1), min_size=1, max_size=4))
def test_lying_headers_are_refused_without_allocating(dims):
    buf = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + b"\x00" * 100
    with pytest.raises(DataError, match="IDX header says"):
        parse_idx(buf, "liar")


# ------------------------------------------------------------------------------------------ training


def _small_data():
    from test_train import synthetic_mnist

    return synthetic_mnist(1500, 300)


def test_interrupt_mid_epoch_keeps_the_last_completed_epoch_and_resume_matches(monkeypatch):
    import mnist_softmax.train as train_mod

    data = _small_data()
    cfg = make_config({"epochs": 4, "val_size": 200, "batch_size": 50, "seed": 2})
    full = fit(cfg, data)
    with monkeypatch.context() as m:
        interrupt_call(m, train_mod, "sgd_step", 2 * 26 + 10)  # partway through epoch 3 (26 batches an epoch)
        with pytest.raises(TrainingInterrupted) as e:
            fit(cfg, data)
    partial = e.value.result
    assert len(partial.history) == 2 and partial.state.epochs_done == 2
    assert not np.array_equal(partial.model.W, full.model.W)
    np.testing.assert_array_equal(partial.model.W, partial.state.params["W"])  # the unfinished epoch was undone
    resumed = fit(cfg, data, resume=partial.state)
    np.testing.assert_array_equal(resumed.model.W, full.model.W)
    np.testing.assert_array_equal(resumed.model.b, full.model.b)
    assert resumed.history[:2] == partial.history and len(resumed.history) == 4
    assert resumed.final == full.final


def test_ctrl_c_in_the_cli_saves_the_epoch_exits_130_and_resume_matches(mnist_dir, tmp_path):
    out = tmp_path / "run"
    code, err, summary = signal_training(mnist_dir, out, tmp_path, signal.SIGINT, 3)
    assert code == 130, err
    assert "continue with: mnist-softmax train --resume" in err and "Traceback" not in err
    assert summary["interrupted"] and 3 <= summary["epochs"] < 40
    assert len((out / "metrics.csv").read_text().splitlines()) == summary["epochs"] + 1
    assert (out / "curves.png").stat().st_size > 0 and not list(out.glob(".*"))

    run("train", "--resume", out, "--data-dir", mnist_dir, "-q")
    run("train", "--data-dir", mnist_dir, "--out", tmp_path / "straight", "--epochs", "40", "-q")
    a, _, ma, _ = load_checkpoint(out / "model.npz")
    b, _, mb, _ = load_checkpoint(tmp_path / "straight" / "model.npz")
    np.testing.assert_array_equal(a.W, b.W)
    assert ma["test_accuracy"] == mb["test_accuracy"] and not ma["interrupted"]


def test_resume_refuses_other_recipe_options_and_runs_without_state(tmp_path, trained):
    cwd, _ = trained
    result = CliRunner().invoke(main, ["train", "--resume", str(cwd / "runs" / "latest"), "--lr", "0.5"])
    assert result.exit_code == 2 and "--resume continues a run" in result.output
    (tmp_path / "model.npz").write_bytes(b"nope")
    result = CliRunner().invoke(main, ["train", "--resume", str(tmp_path)])
    assert result.exit_code == 1 and "not a readable checkpoint" in result.output


# ------------------------------------------------------------------------------------------ outputs


def test_runs_started_together_get_their_own_folders(tmp_path):
    got, barrier = [], threading.Barrier(8)

    def start():
        barrier.wait()
        got.append(new_run_dir(tmp_path))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 8


@pytest.mark.parametrize(
    "err,message",
    [
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
        (PermissionError(errno.EACCES, "Permission denied"), "Permission denied"),
    ],
)
def test_full_disk_or_unwritable_folder_is_one_clear_line_and_no_half_checkpoint(
    mnist_dir, tmp_path, monkeypatch, err, message
):
    import mnist_softmax.fileio as fileio

    out = tmp_path / "run"

    def failing_fsync(fd):
        raise err

    monkeypatch.setattr(fileio.os, "fsync", failing_fsync)
    result = CliRunner().invoke(main, ["train", "--data-dir", str(mnist_dir), "--out", str(out), "-q", "--epochs", "1"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and message in result.output
    assert f"{message}: {out / 'model.npz'}" in result.output  # the real file, not a temp file
    assert not (out / "model.npz").exists() and not list(out.glob(".*")), "nothing half-written left"


def test_out_under_a_file_is_a_clear_error(tmp_path, mnist_dir):
    (tmp_path / "file").write_text("x")
    result = CliRunner().invoke(main, ["train", "--data-dir", str(mnist_dir), "--out", str(tmp_path / "file" / "run")])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert f"Not a directory: {tmp_path / 'file' / 'run'}" in result.output


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plain = CliRunner().invoke(main, ["eval"])
    assert plain.exit_code == 1 and plain.output.startswith("Error: no trained model")
    debug = CliRunner().invoke(main, ["--debug", "eval"])
    assert debug.exit_code == 1 and type(debug.exception).__name__ == "CheckpointError"


def test_download_failure_from_the_cli_lists_sources(mnist_server, tmp_path, monkeypatch):
    _, url = mnist_server
    monkeypatch.setattr(sources_mod, "DEFAULT_SOURCES", ())  # no internet here: only our bad mirrors
    result = CliRunner().invoke(
        main, ["download", "--data-dir", str(tmp_path), "--mirror", f"{url}/404/", "--mirror", f"{url}/html/", "-q"]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{url}/404/: HTTP 404" in result.output and f"{url}/html/: got an HTML page" in result.output
    assert os.listdir(tmp_path) == []


def test_the_stall_limit_is_the_60_seconds_the_docs_state():
    """The limit by its value: what fetch_file and ensure_files use unless told, and what docs/data.md says."""
    import inspect

    from mnist_softmax.download import ensure_files
    from mnist_softmax.watched_http import SLOW_NOTICE_SECONDS, STALL_SECONDS

    assert STALL_SECONDS == 60.0 and SLOW_NOTICE_SECONDS == 10.0
    assert inspect.signature(fetch_file).parameters["stall"].default == STALL_SECONDS
    assert "stall" not in inspect.signature(ensure_files).parameters  # it takes fetch_file's default
    from conftest import ROOT

    docs = (ROOT / "docs" / "data.md").read_text()
    assert "64 kB in 60 s" in docs and "10 s" in docs
