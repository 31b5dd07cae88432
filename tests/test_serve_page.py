"""The local page in a real browser (Debian's Chromium, driven by Playwright), against the real
server: drawing with mouse strokes, a file, a refusal, each section's numbers against the CLI's,
the learning step, the run behind the checkpoint, no console errors, and a screenshot of each.

Skipped where Chromium or Playwright is missing, saying how to get them; mandatory under CI
($MNIST_SOFTMAX_REQUIRE_BROWSER=1, set by .ci/run, which installs both)."""

import json
import math

import numpy as np
import pytest
from conftest import run
from serving import ONE, ZERO, Page, call, cli_record, start_server, stop
from userstyle import MAKERS, NEGATIVES

from mnist_softmax.display import number


def test_1_a_digit_drawn_with_the_mouse_is_read_as_it_is_drawn(page):
    """A 1 and a 0 drawn with mouse strokes; undo takes a stroke back, clear empties the pad."""
    page.draw(ONE)
    page.settled("1")
    page.testid("clear").click()
    page.tab.wait_for_function("() => document.getElementById('prediction').textContent === '–'")
    page.draw(ZERO)
    page.settled("0")
    page.shot("drawn-zero")
    page.draw([[(40, 140), (80, 140)]])  # a stroke more, then taken back
    page.settled()
    page.testid("undo").click()
    page.settled("0")
    page.testid("undo").click()
    page.tab.wait_for_function("() => document.getElementById('prediction').textContent === '–'")


def test_1_the_page_updates_while_the_stroke_is_still_being_drawn(page):
    box = page.testid("canvas").bounding_box()
    page.tab.mouse.move(box["x"] + 150, box["y"] + 40)
    page.tab.mouse.down()
    for y in range(50, 250, 10):
        page.tab.mouse.move(box["x"] + 150 - y / 20, box["y"] + y)
    page.settled("1")  # the button is still held
    page.tab.mouse.up()


@pytest.mark.parametrize("pointer", ["pen", "touch"])
def test_1_a_pen_or_a_finger_draws_as_a_mouse_does(page, pointer):
    """Pointer events of a pen and of a finger, as a tablet or a phone sends them."""
    page.tab.evaluate(
        """([kind, points]) => {
            const canvas = document.getElementById("canvas");
            const box = canvas.getBoundingClientRect();
            const at = ([x, y]) => ({clientX: box.left + x * box.width / 280, clientY: box.top + y * box.height / 280});
            const send = (type, p) => canvas.dispatchEvent(new PointerEvent(type, {pointerId: 7, pointerType: kind,
                isPrimary: true, bubbles: true, cancelable: true, buttons: type === "pointerup" ? 0 : 1, ...at(p)}));
            send("pointerdown", points[0]);
            points.slice(1).forEach((p) => send("pointermove", p));
            send("pointerup", points[points.length - 1]);
        }""",
        [pointer, [list(p) for p in ZERO[0]]],
    )
    page.settled("0")


def test_1_an_image_dropped_on_the_pad_is_read(page, mnist, tmp_path):
    path = MAKERS["JPEG photo"](mnist.test_images[0], tmp_path, "dropped", np.random.default_rng(4))
    data = list(path.read_bytes())
    page.tab.evaluate(
        """(bytes) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], "dropped.jpg", {type: "image/jpeg"}));
            const drop = new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true});
            document.getElementById("pad").dispatchEvent(drop);
        }""",
        data,
    )
    page.settled("7")
    assert "dropped.jpg" in page.tab.locator("#source").text_content()


def _file_numbers_match_the_cli(page, checkpoint, path, label) -> dict:
    want = cli_record(checkpoint, path, label)
    page.testid("file").set_input_files(str(path))
    page.settled(str(want["prediction"]))
    page.testid("label").select_option(str(label))
    page.tab.wait_for_function(
        f"() => document.getElementById('loss').textContent === '{number(want['loss'])}'", timeout=10000
    )  # the loss as the CLI prints it
    for k, p in enumerate(want["probabilities"]):
        assert page.text(f"p-{k}") == number(p)
    for k, z in enumerate(want["explain"]["logits"]):
        assert f"z = {number(z)}" in page.text(f"logit-{k}")
    _the_page_prints_pythons_strings(page, checkpoint, path, label)
    return want


def _the_page_prints_pythons_strings(page, checkpoint, path, label) -> None:
    """Every number the page formats is Python's string (display.number): each bias b_k and each
    dL/dz_k, as the API answers them for the same file, and dL/dz = p − onehot by its sign."""
    url = page.tab.url.rstrip("/")
    status, record = call(url, f"/api/predict?label={label}", path.read_bytes(), headers={"Origin": url})
    assert status == 200
    shown = record["page"]["shown"]
    for k in range(10):
        assert page.text(f"bias-{k}") == f"b = {shown['bias'][k]}"
        assert page.text(f"grad-z-{k}") == shown["grad_z"][k]
        p, y = record["probabilities"][k], float(k == label)
        assert float(shown["grad_z"][k]) == pytest.approx(p - y, abs=1e-4)
        assert math.copysign(1, float(shown["grad_z"][k])) == math.copysign(1, p - y)  # the sign, however small


def test_2_to_6_a_chosen_file_shows_the_clis_numbers(page, pixels_server, mnist, tmp_path):
    """predict --json --explain --label Y and the page agree to every printed digit: p, z, the loss."""
    checkpoint, _ = pixels_server
    rng = np.random.default_rng(8)
    for style in ("phone photo, EXIF orientation 6", "light on dark, tight crop"):
        i = int(rng.integers(10000))
        path = MAKERS[style](mnist.test_images[i], tmp_path, style[:5], rng)
        want = _file_numbers_match_the_cli(page, checkpoint, path, int(mnist.test_labels[i]))
        assert page.text("loss") == f"{want['loss']:.4f}"
    page.shot("file")


def test_2_a_refused_image_shows_the_clis_refusal_word_for_word(page, pixels_server, tmp_path):
    checkpoint, _ = pixels_server
    path = NEGATIVES["a blank page"](tmp_path, "blank", np.random.default_rng(3))
    want = cli_record(checkpoint, path)
    page.refusals_expected = True
    page.testid("file").set_input_files(str(path))
    page.tab.wait_for_function("() => !document.getElementById('error').hidden")
    assert page.text("error") == want and want.startswith("no digit found (")
    assert page.text("prediction") == "–"
    page.shot("refused")


def test_2_a_refusal_after_an_answer_leaves_nothing_of_the_old_answer(page, pixels_server, mnist, tmp_path):
    """A file, then one refused: the old digit, box and answer go; then drawing works again at once
    (the preview of a file never sits in the way of the pen)."""
    good = MAKERS["dark pen on white paper"](mnist.test_images[0], tmp_path, "seven", np.random.default_rng(2))
    page.testid("file").set_input_files(str(good))
    page.settled("7")
    page.refusals_expected = True
    page.testid("file").set_input_files(str(NEGATIVES["a blank page"](tmp_path, "blank", np.random.default_rng(3))))
    page.tab.wait_for_function("() => !document.getElementById('error').hidden")
    assert not page.tab.locator("#sees").is_visible() and page.tab.locator("#answer").text_content() == ""
    for stale in ("#softmax", "#logits", "#loss-full", "#features"):  # no number of the image before
        assert not page.tab.locator(stale).is_visible(), stale
    assert page.testid("learn").is_disabled()
    page.draw(ONE)
    page.settled("1")
    assert page.testid("error").is_hidden() and page.tab.locator("#sees").is_visible()
    page.testid("file").set_input_files(str(good))
    page.settled("7")
    # The input lets go of the file once read, or a browser sees no change when it is chosen again.
    assert page.testid("file").input_value() == ""


def test_the_page_fits_a_phone_screen(browser, pixels_server, tmp_path):
    """At 390 px wide (a phone), nothing runs off the side of the page, and the pad still draws."""
    tab = browser.new_page(viewport={"width": 390, "height": 800}, has_touch=True)
    errors = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.goto(pixels_server[1])
    tab.wait_for_function("() => document.getElementById('model-info').textContent.length > 0")
    tab.wait_for_selector("[data-testid=cell-0-0]")
    assert tab.evaluate("() => document.documentElement.scrollWidth") <= 390
    for chart in ("curves", "curves-acc"):  # drawn to scale, so a narrow screen shrinks it whole
        assert tab.get_attribute(f"#{chart}", "viewBox") == "0 0 340 190"
    tab.screenshot(path=tmp_path / "phone.png", full_page=True)
    assert errors == []
    tab.close()


def test_7_a_learning_step_raises_p_y_and_reset_takes_it_back(page, pixels_server, mnist, tmp_path):
    from mnist_softmax.checkpoint import load_checkpoint

    checkpoint, _ = pixels_server
    before_bytes = checkpoint.read_bytes()
    page.draw(ONE)
    page.settled("1")
    page.testid("label").select_option("7")  # teach it that this stroke is a 7
    page.tab.wait_for_function("() => document.getElementById('loss').textContent !== '–'")
    p7 = float(page.text("p-7"))
    loss = float(page.text("loss"))
    page.testid("lr").fill("")
    page.testid("learn").click()
    assert page.text("learn-status") == "Enter a learning rate first (for example 0.005)."
    page.testid("lr").fill("0.002")
    for step in (1, 2):
        page.testid("learn").click()
        page.tab.wait_for_function(
            f"() => document.getElementById('steps').textContent === '{step} step{'s' if step > 1 else ''} taken'"
        )
        now = float(page.text("p-7"))
        assert now > p7 and float(page.text("loss")) < loss
        p7, loss = now, float(page.text("loss"))
    assert "went from" in page.text("learned")
    assert page.tab.locator("#loss-full").text_content().endswith("(the same number)")  # as predict --explain
    page.shot("learned")
    page.testid("save-name").fill("taught-seven")
    page.testid("save").click()
    page.tab.wait_for_function("() => document.getElementById('saved').textContent.startsWith('saved as')")
    saved = checkpoint.parent / "taught-seven.npz"
    assert saved.is_file() and load_checkpoint(saved).metrics["learned_on_page"]["steps"] == 2
    saved.unlink()
    assert checkpoint.read_bytes() == before_bytes  # the served checkpoint is never touched
    page.testid("reset").click()
    page.tab.wait_for_function("() => document.getElementById('steps').textContent === '0 steps taken'")


def test_8_the_run_behind_the_checkpoint(page, pixels_server, mnist_dir, mnist):
    checkpoint, _ = pixels_server
    page.tab.wait_for_selector("[data-testid=cell-4-9]")
    evaluated = json.loads(run("eval", "--checkpoint", checkpoint, "--data-dir", mnist_dir, "--json").stdout)
    for t, p in ((4, 9), (3, 5), (7, 7)):
        assert page.text(f"cell-{t}-{p}") == str(evaluated["confusion"][t][p])
    assert page.testid("curves").locator("polyline").count() == 2
    assert page.testid("curves-acc").locator("polyline").count() == 2
    page.testid("cell-4-9").click()
    page.tab.wait_for_selector("[data-testid=cell] button.thumb")
    first = page.testid("cell").locator("button.thumb").first
    index = int(first.get_attribute("data-testid").removeprefix("test-digit-"))
    assert mnist.test_labels[index] == 4
    first.click()
    page.settled("9")  # read as the model read it: a 9
    assert page.testid("label").input_value() == "4"  # with its true label: a step teaches a 4
    page.tab.wait_for_function("() => window.scrollY === 0")  # back up at the pad
    page.draw(ONE)  # then a digit of one's own: the test digit's label goes with it
    page.settled("1")
    assert page.testid("label").input_value() == ""
    page.shot("run")


def test_the_cnn_page_shows_64_maps_flattened(browser, cnn_trained, mnist_dir, mnist, tmp_path):
    checkpoint = cnn_trained / "model.npz"
    proc, url = start_server(checkpoint, mnist_dir)
    page = Page(browser, url, tmp_path)
    try:
        rng = np.random.default_rng(5)
        path = MAKERS["dark pen on white paper"](mnist.test_images[11], tmp_path, "pen", rng)
        _file_numbers_match_the_cli(page, checkpoint, path, int(mnist.test_labels[11]))
        assert page.tab.locator("#features .maps canvas").count() == 64
        assert "N = 64·7·7 = 3136" in page.tab.locator("#features-how").text_content()
        page.shot("cnn")
    finally:
        page.close()
        stop(proc)
