"""`predict` at its edges: odd file names, FIFOs, empty folders, --save-input, --label, a closed pipe."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from mnist_softmax.cli import main


@pytest.fixture(scope="module")
def model_path(trained):
    cwd, _ = trained
    return cwd / "runs" / "latest" / "model.npz"


@pytest.fixture(scope="module")
def seven(mnist, tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "seven.png"
    Image.fromarray(mnist.test_images[0]).save(path)
    return path


def _predict(model_path, *args):
    return CliRunner().invoke(main, ["predict", *map(str, args), "--checkpoint", str(model_path)])


def test_file_names_cannot_break_or_forge_lines_and_json_stays_utf8(model_path, seven, tmp_path):
    odd = tmp_path / "a\nfake: 3  (p = 1.0000)\x1b[2J.png"
    odd.write_bytes(seven.read_bytes())
    raw = os.fsencode(tmp_path) + b"/caf\xe9.png"  # a Latin-1 name: not UTF-8
    with open(raw, "wb") as f:
        f.write(seven.read_bytes())
    text = _predict(model_path, tmp_path)
    assert text.exit_code == 0, text.output
    firsts = [line for line in text.stdout.splitlines() if ": 7  (p = " in line]
    assert len(firsts) == 2 and "\\n" in firsts[0] + firsts[1] and "\\x1b" in firsts[0] + firsts[1]
    assert "\x1b" not in text.stdout and "caf\\xe9.png" in text.stdout
    out = subprocess.run(
        [sys.executable, "-m", "mnist_softmax", "predict", str(tmp_path), "--checkpoint", str(model_path), "--json"],
        capture_output=True,
    )
    assert out.returncode == 0, out.stderr
    records = [json.loads(line.decode("utf-8")) for line in out.stdout.splitlines()]  # strict UTF-8
    assert {r["path"].rsplit("/", 1)[1] for r in records} == {odd.name, "caf\\xe9.png"}


def test_a_fifo_is_refused_not_waited_on(model_path, seven, tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    result = _predict(model_path, fifo, seven)
    assert result.exit_code == 1 and f"error: {fifo}: not a regular file" in result.stderr
    assert result.stdout.startswith(f"{seven}: 7")


def test_a_folder_without_images_is_an_error_naming_it(model_path, seven, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    result = _predict(model_path, tmp_path / "empty", tmp_path / "notes", seven)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: {tmp_path / 'empty'}: no image files in this folder",
        f"error: {tmp_path / 'notes'}: no image files in this folder",
    ]
    assert result.stdout.startswith(f"{seven}: 7")


def test_save_input_never_overwrites(model_path, seven, tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "x.png").write_bytes(seven.read_bytes())
    seen = tmp_path / "seen"
    seen.mkdir()
    (seen / "x.png").write_bytes(b"the user's own file")
    result = CliRunner().invoke(
        main,
        [
            "predict",
            str(tmp_path / "a"),
            str(tmp_path / "b"),
            "--checkpoint",
            str(model_path),
            "--save-input",
            str(seen),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (seen / "x.png").read_bytes() == b"the user's own file"
    assert sorted(p.name for p in seen.iterdir()) == ["x-2.png", "x-3.png", "x.png"]
    assert f"saved as {seen / 'x-2.png'}" in result.stdout and f"saved as {seen / 'x-3.png'}" in result.stdout


def test_label_without_explain_shows_the_loss(model_path, seven):
    text = _predict(model_path, seven, "--label", "7")
    assert text.exit_code == 0 and "softmax loss for label 7: −log p_7 = −log 0." in text.stdout
    record = json.loads(_predict(model_path, seven, "--label", "3", "--json").stdout)
    assert record["label"] == 3 and record["loss"] > 1 and "explain" not in record


def test_a_closed_pipe_ends_quietly(model_path, seven, tmp_path):
    for i in range(30):
        (tmp_path / f"{i:02d}.png").write_bytes(seven.read_bytes())
    cmd = f"{sys.executable} -m mnist_softmax predict {tmp_path} --checkpoint {model_path} | head -1"
    out = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True)
    assert out.stdout.startswith(f"{tmp_path / '00.png'}: 7") and len(out.stdout.splitlines()) == 1
    assert out.stderr == "" and out.returncode in (0, 141)


def test_a_failed_save_input_costs_that_image_only(model_path, seven, tmp_path, monkeypatch):
    import errno

    import mnist_softmax.fileio as fileio

    long_name = tmp_path / ("d" * 250 + ".png")
    long_name.write_bytes(seven.read_bytes())
    ok = _predict(model_path, long_name, "--save-input", tmp_path / "seen")
    assert ok.exit_code == 0, ok.output
    assert [len(os.fsencode(p.name)) <= 255 for p in (tmp_path / "seen").iterdir()] == [True]

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "seen" / "x.png"))

    monkeypatch.setattr(fileio, "write_new", full)
    result = _predict(model_path, seven, seven, "--save-input", tmp_path / "seen")
    assert result.exit_code == 1 and result.stdout.count(": 7  (p = ") == 2  # both still classified
    assert result.stderr.count("could not save its input image") == 2 and "No space left" in result.stderr


def test_a_newline_in_a_path_cannot_forge_an_error_line(tmp_path):
    bad = tmp_path / "x\nError: all good.npz"
    bad.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(bad)])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "x\\nError: all good.npz" in result.output


def test_predict_file_is_the_library_call(model_path, seven, tmp_path):
    from mnist_softmax.checkpoint import load_checkpoint
    from mnist_softmax.images import ImageError
    from mnist_softmax.predict import predict_file

    model = load_checkpoint(model_path).model
    pred = predict_file(model, seven, label=7)
    assert pred.digit_class == 7 and pred.digit.shape == (28, 28) and 0 < pred.loss < 0.1
    Image.new("L", (40, 40), 255).save(tmp_path / "blank.png")
    with pytest.raises(ImageError, match="no digit found"):
        predict_file(model, tmp_path / "blank.png")


def test_json_output_is_strict_json_even_for_a_zero_probability(model_path, seven, tmp_path):
    """A class whose probability underflows to 0 has cross entropy −log 0 = inf: JSON has no such
    number, so it is written as the string "Infinity" (what Number() and float() read back)."""
    import numpy as np

    from mnist_softmax.checkpoint import load_checkpoint, save_checkpoint

    checkpoint = load_checkpoint(model_path)
    checkpoint.model.b[3] = -1e4  # class 3 cannot win: p_3 = exp(-1e4 - ...) is 0 in float64
    path = tmp_path / "model.npz"
    save_checkpoint(path, checkpoint.model, checkpoint.config, checkpoint.metrics)

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    result = CliRunner().invoke(
        main, ["predict", str(seven), "--checkpoint", str(path), "--json", "--explain", "--label", "3"]
    )
    assert result.exit_code == 0 and result.stderr == ""  # no "divide by zero" warning either
    record = json.loads(result.stdout, parse_constant=refuse)
    assert record["explain"]["cross_entropy"] == "Infinity" and float(record["explain"]["cross_entropy"]) == np.inf
    assert 1e4 < record["explain"]["loss"] < 1.1e4 and record["loss"] == pytest.approx(record["explain"]["loss"])
    text = CliRunner().invoke(main, ["predict", str(seven), "--checkpoint", str(path), "--explain", "--label", "3"])
    assert "cross entropy of p against label 3: inf (p_3 underflowed to 0" in text.output and text.stderr == ""


def test_a_label_outside_the_classes_is_refused_by_the_library(model_path, seven):
    from mnist_softmax.checkpoint import load_checkpoint
    from mnist_softmax.predict import predict_file

    model = load_checkpoint(model_path).model
    for label in (-1, 10):
        with pytest.raises(ValueError, match=r"labels must be classes in \[0, 10\)"):
            predict_file(model, seven, label=label)
    assert predict_file(model, seven, label=9).label == 9


def test_killing_a_worker_process_costs_predict_nothing(model_path, mnist, tmp_path):
    """A folder read by worker processes, one of which is killed outright midway: every image is
    still printed, in order, with no traceback, and the exit code is 0."""
    import signal

    folder = tmp_path / "folder"
    folder.mkdir()
    for k in range(400):
        Image.fromarray(255 - mnist.test_images[k]).resize((140, 140)).save(folder / f"{k:03d}.png")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnist_softmax", "predict", str(folder), "--checkpoint", str(model_path), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines = [proc.stdout.readline() for _ in range(20)]  # the pool is at work
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert children, "no worker processes to kill"
    os.kill(int(children[0]), signal.SIGKILL)
    lines += proc.stdout.readlines()  # through the same reader: it holds lines already read from the pipe
    err = proc.stderr.read()
    proc.wait(timeout=300)
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == 0 and err == "", err
    assert [json.loads(line)["path"] for line in lines] == [str(folder / f"{k:03d}.png") for k in range(400)]


def test_library_warnings_never_reach_the_user(model_path, seven, tmp_path):
    """Pillow's "Corrupt EXIF data", NumPy's "Mean of empty slice" (a 1×100000 image): the image
    is read, or refused with a reason of our own, and nothing else is printed, even with -W always."""
    import io

    import numpy as np

    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 3  # upside down, then the IFD's entry count garbled
    with Image.open(seven) as im:  # stored upside down, as a camera held that way does
        Image.eval(im, lambda v: 255 - v).resize((112, 112)).rotate(180).save(buf, format="JPEG", exif=exif)
    data = bytearray(buf.getvalue())
    at = data.find(b"Exif\x00\x00") + 6 + 8
    data[at : at + 2] = b"\xff\xff"
    (tmp_path / "corrupt-exif.jpg").write_bytes(bytes(data))
    for shape in ((100000, 1), (1, 100000)):
        Image.fromarray(np.full(shape, 200, np.uint8)).save(tmp_path / f"strip-{shape[0]}.png")
    command = ["-W", "always", "-m", "mnist_softmax", "predict", str(tmp_path), "--checkpoint", str(model_path)]
    done = subprocess.run([sys.executable, *command], capture_output=True, text=True)
    assert done.returncode == 1 and f"{tmp_path / 'corrupt-exif.jpg'}: 7" in done.stdout  # its Orientation was read
    narrow = "no digit found (the image is {}×{} px: too narrow to hold a digit)"
    assert sorted(done.stderr.splitlines()) == [
        f"error: {tmp_path / 'strip-1.png'}: {narrow.format(100000, 1)}",
        f"error: {tmp_path / 'strip-100000.png'}: {narrow.format(1, 100000)}",
    ]


@pytest.mark.parametrize("name", ["..png", "...png", ".png"])
def test_save_input_of_an_image_named_dots_saves_a_plain_name(model_path, seven, tmp_path, name):
    """An input named `..png` has the stem "." (a folder): its copy gets a plain name, and the other
    images are read and saved as well."""
    odd = tmp_path / "in" / name
    odd.parent.mkdir()
    odd.write_bytes(seven.read_bytes())
    result = _predict(model_path, odd, seven, "--save-input", tmp_path / "seen")
    assert result.exit_code == 0 and result.stdout.count(": 7  (p = ") == 2, result.output
    saved = sorted(p.name for p in (tmp_path / "seen").iterdir())
    stem = Path(name).stem
    assert saved == sorted([("_" * len(stem) if stem in (".", "..") else stem) + ".png", seven.stem + ".png"])
