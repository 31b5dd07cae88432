"""The page teaches what training finds (issue 26): W on the page, live training, numbers that show
the softmax, colour scales that compare, the lesson's path with its worked examples, and a step's
Δz beside its formula. API tests in this process (serve.api.Client), browser tests in Chromium
against the real server (mandatory under CI, as in test_serve_page)."""

import io
import json
import math

import numpy as np
import pytest
from conftest import run
from PIL import Image
from serving import ONE, ZERO, Page, call, start_server, stop

from mnist_softmax.display import number


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(trained, mnist_dir):
    from mnist_softmax.serve import App
    from mnist_softmax.serve.api import Client, Site

    app = App(trained[0] / "runs" / "latest" / "model.npz", mnist_dir)
    app.site = Site(8000, frozenset({"127.0.0.1"}))
    return Client(app)


def _session(client) -> str:
    return client.post("/api/session").json()["session"]


# ------------------------------------------------------------------------------------------ the API


def test_26_the_lessons_worked_examples_are_its_own_numbers(client):
    got = client.get("/api/lesson").json()
    assert [round(float(p), 3) for p in got["softmax"]["p"]] == [0.090, 0.245, 0.665]
    losses = got["losses"]
    assert got["label"] == 3 and [losses[k]["p_true"] for k in ("right", "close", "absurd")] == [
        "0.6000", "0.3000", "0.1000"]  # fmt: skip
    assert [losses[k]["loss"] for k in ("right", "close", "absurd")] == [number(-math.log(v)) for v in (0.6, 0.3, 0.1)]
    ce = got["cross_entropy"]
    assert (
        ce["softmax_loss"] == ce["cross_entropy"] == number(-math.log(math.exp(3) / sum(map(math.exp, (1, 2, 3)))), 6)
    )
    assert got["gradient"]["grad"][2].startswith("-0.33")


def test_26_the_softmax_editor_subtracts_the_max(client):
    plain = client.get("/api/softmax?z=1,2,3").json()
    huge = client.get("/api/softmax?z=1000,%201001,%201002").json()
    assert huge["p"] == plain["p"] and huge["shifted"] == plain["shifted"] == ["-2.0000", "-1.0000", "0"]
    assert huge["naive"]["exp"] == ["inf"] * 3 and huge["naive"]["p"] == ["nan"] * 3  # exp(1000) overflows
    assert plain["naive"]["p"] == plain["p"]
    tiny = client.get(f"/api/softmax?z=0,{math.log(1e5 - 1)}").json()  # p_0 = 1e-5
    assert tiny["p"][0] != "0.0000" and float(tiny["p"][0]) == pytest.approx(1e-5, rel=1e-3)
    assert tiny["p"][1] == "0.99999"
    for bad in ("", "1", "1,x", "1,nan", "1,inf", "1," + "2," * 20 + "3", "1,1e400", "١,٢"):
        answer = client.get(f"/api/softmax?z={bad}")
        assert answer.status == 400 and answer.json()["code"] == "bad-logits", bad


def test_26_w_as_the_page_draws_it(client, mnist):
    from mnist_softmax.explain import weight_templates

    model = client.app.model
    w = client.get("/api/weights").json()
    t = weight_templates(model)
    assert w["shape"] == [10, 784] and w["cells"] == [28, 28] and len(w["rows"]) == 10
    assert np.allclose(w["rows"], t.rows.reshape(10, -1), rtol=1e-4, atol=1e-4 * t.limit)
    assert w["shown"]["limit"] == number(w["limit"]) and "delta" not in w
    assert sum(w["rare"]) == int(t.rare.sum()) > 0
    # After a step, ΔW: the rows that moved most are those with the largest |p − onehot|.
    key = _session(client)
    step = client.post(f"/api/learn?session={key}&label=3&lr=0.01", _png(mnist.test_images[0])).json()
    grad = np.abs(np.array(step["before"]["probabilities"]) - np.eye(10)[3])
    delta = client.get(f"/api/weights?session={key}").json()["delta"]
    moved = np.array([float(v) for v in delta["moved"]])
    assert np.argsort(moved)[-2:].tolist() == np.argsort(grad)[-2:].tolist()
    assert float(delta["shown"]["limit"]) == pytest.approx(moved.max(), rel=1e-3)


def test_26_a_steps_delta_z_is_the_formula_to_every_digit_shown(client, mnist):
    key = _session(client)
    for i, lr in enumerate((0.001, 0.005, 0.05, 0.5)):
        label = (int(mnist.test_labels[i]) + i) % 10
        got = client.post(f"/api/learn?session={key}&label={label}&lr={lr}", _png(mnist.test_images[i])).json()
        d = got["delta_z"]
        assert d["measured"] == d["formula"], (lr, d)
        p = np.array(got["before"]["probabilities"])
        x2 = float(d["x_norm2"])
        want = -lr * (x2 + 1) * (p - np.eye(10)[label])
        assert np.allclose(
            [float(v) for v in d["formula"]], want, atol=float(f"1e-{len(d['formula'][0].split('.')[1])}")
        )
        # and it is what the logits did: z after − z before, to the float32 weights' rounding
        z0, z1 = (np.array(r["explain"]["logits"]) for r in (got["before"], got["after"]))
        assert np.allclose(z1 - z0, want, atol=1e-4 + 1e-4 * np.abs(want).max())


def test_26_live_training_uses_trains_loop_bounded_and_reproducible(client):
    from mnist_softmax.serve.live import MAX_FRAME_STEPS

    def frames(key, n):
        client.post(f"/api/live?session={key}&action=start&from=zeros")
        for _ in range(n):
            last = client.post(f"/api/live?session={key}&action=frame&lr=0.05&batch=200&steps=5").json()
        return last

    a, b = _session(client), _session(client)
    first, second = frames(a, 4), frames(b, 4)
    timeless = lambda history: [{k: v for k, v in row.items() if k != "seconds"} for row in history]  # noqa: E731
    assert first["steps"] == 20 and first["seen"] == 4000 and timeless(first["history"]) == timeless(second["history"])
    assert first["weights"]["rows"] == second["weights"]["rows"]  # same seed, same frames: same W
    assert first["rows"] == 55000 and first["val_rows"] == 5000
    zeros = client.post(f"/api/live?session={a}&action=start&from=zeros").json()
    assert zeros["steps"] == 0 and not np.any(zeros["weights"]["rows"])
    ck = client.post(f"/api/live?session={a}&action=start&from=checkpoint").json()
    assert ck["weights"]["rows"] == client.get("/api/weights").json()["rows"]
    for bad, code in (
        ("lr=11", "bad-lr"),
        ("lr=0", "bad-lr"),
        ("batch=0", "bad-number"),
        (f"steps={MAX_FRAME_STEPS + 1}", "bad-number"),
    ):
        answer = client.post(f"/api/live?session={a}&action=frame&{bad}")
        assert answer.status == 400 and answer.json().get("code") == code, bad
    assert client.post(f"/api/live?session={a}&action=frame&lr=10&steps=50").status in (200, 409)  # diverges, said


def test_26_the_score_of_live_training_is_evals_of_its_saved_checkpoint(client, mnist_dir):
    key = _session(client)
    client.post(f"/api/live?session={key}&action=start&from=zeros")
    for _ in range(3):
        client.post(f"/api/live?session={key}&action=frame&lr=0.05&batch=100&steps=10")
    score = client.get(f"/api/score?session={key}").json()
    assert score["live_steps"] == 30 and score["steps"] == 0
    saved = client.post(f"/api/save?session={key}", b'{"name": "live-trained"}').json()
    try:
        evaluated = json.loads(run("eval", "--checkpoint", saved["saved"], "--data-dir", mnist_dir, "--json").stdout)
        assert (
            score["shown"]["accuracy"] == f"{evaluated['accuracy']:.4f}" and score["accuracy"] == evaluated["accuracy"]
        )
        assert saved["live_steps"] == 30
    finally:
        from pathlib import Path

        Path(saved["saved"]).unlink()


# ------------------------------------------------------------------------------------------ the page


def _draw_and_label(page, strokes, prediction, label):
    page.draw(strokes)
    page.settled(prediction)
    page.testid("label").select_option(str(label))
    page.tab.wait_for_function("() => document.getElementById('loss').textContent !== '–'")


def _canvas(page, selector) -> str:
    return page.tab.evaluate(f"() => document.querySelector('{selector} canvas').toDataURL()")


def _bar(page, holder) -> tuple[str, str]:
    ticks = page.tab.locator(f"#{holder} .colour-bar .ticks span")
    return ticks.nth(0).text_content(), ticks.nth(2).text_content()


def test_26_w_is_on_the_page_with_its_shape_and_rows(page, pixels_server):
    section = page.testid("weights")
    page.tab.wait_for_selector("[data-testid=weights-row-9] canvas")
    assert "10 × 784" in section.text_content()
    api = call(pixels_server[1], "/api/weights")[1]
    assert _bar(page, "weights-scale") == (f"−{api['shown']['limit']}", f"+{api['shown']['limit']}")
    pictures = {_canvas(page, f"[data-testid=weights-row-{k}]") for k in range(10)}
    assert len(pictures) == 10  # ten different rows
    _draw_and_label(page, ZERO, "0", 0)
    page.testid("weights-row-3").focus()  # from the keyboard as by pointing: z_3 as the sum of W_3 ⊙ x
    detail = page.tab.locator("#weights-detail")
    page.tab.wait_for_function("() => document.getElementById('weights-detail').textContent.includes('z₃') || "
                               "document.getElementById('weights-detail').textContent.includes('z3')")  # fmt: skip
    z3 = page.text("logit-3").split("z = ")[1].split("b =")[0].strip()
    assert detail.text_content().rstrip().endswith(f"= {z3}") and detail.locator("canvas").count() == 2
    page.shot("weights")


def test_26_a_step_moves_the_rows_it_should_and_its_delta_z_is_the_formula(page):
    _draw_and_label(page, ZERO, "0", 6)
    page.testid("lr").fill("0.005")
    page.testid("learn").click()
    page.tab.wait_for_selector("[data-testid=dz-9]")
    for k in range(10):
        assert page.text(f"dz-{k}") == page.text(f"dz-formula-{k}")
    formula = page.tab.locator("#learned .formula").text_content()
    assert "‖x‖²" in formula and "lr·(‖x‖² + 1)" in formula
    page.tab.wait_for_selector("[data-testid=delta-row-9]")  # ΔW, on one scale
    assert page.tab.locator("#weights-delta").is_visible()
    assert page.tab.locator("#own-step").text_content().count("Δz") >= 1  # the path shows the step too


def test_26_numbers_that_show_the_softmax(page):
    _draw_and_label(page, ZERO, "0", 0)
    for k in range(10):  # no probability reads 0 or 1 unless it is
        text = page.text(f"p-{k}")
        assert float(text) > 0 and text not in ("0.0000", "1.0000"), text
    widths = page.tab.evaluate("() => [...document.querySelectorAll('#log-bars .bar')].map(b => b.offsetWidth)")
    ps = [float(page.text(f"p-{k}")) for k in range(10)]
    assert len(widths) == 10 and np.argsort(widths, kind="stable")[-1] == int(np.argmax(ps))
    page.testid("lesson-logits").fill(f"0, {math.log(1e5 - 1)}")
    page.tab.wait_for_function("() => document.querySelector('[data-testid=lesson-p]').textContent.includes('e-05')")
    small, large = page.text("lesson-p").split(", ")
    assert float(small) == pytest.approx(1e-5, rel=1e-3) and large == "0.99999"


def test_26_pictures_meant_to_be_compared_share_one_stated_scale(page, pixels_server):
    _draw_and_label(page, ONE, "1", 7)
    url = page.tab.url.rstrip("/")
    png = page.tab.evaluate("async () => { const b = await new Promise(r => document.getElementById('canvas')"
                            ".toBlob(r)); return [...new Uint8Array(await b.arrayBuffer())]; }")  # fmt: skip
    shown = call(url, "/api/predict?label=7", bytes(png), headers={"Origin": url})[1]["page"]["shown"]
    for holder, key in (("logits-scale", "contributions_limit"), ("gradient", "grad_limit")):
        assert page.tab.locator(f"#{holder} .colour-bar .ticks span").nth(2).text_content() == f"+{shown[key]}", holder
    # One scale: a class whose gradient is tiny draws (almost) white, beside the strong ones.
    rows = page.tab.locator("#gradient .class")
    maxima = [float(t) for t in shown["grad_row_max"]]
    faint = int(np.argmin(maxima))
    white = page.tab.evaluate(
        """(k) => { const c = document.querySelectorAll('#gradient .class canvas')[k];
                    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    let low = 255; for (let i = 0; i < d.length; i += 4) low = Math.min(low, d[i], d[i + 1], d[i + 2]);
                    return low; }""",
        faint,
    )
    assert rows.count() == 10 and maxima[faint] < 0.01 * max(maxima) and white >= 250


def test_26_the_lessons_path_shows_its_worked_examples(page):
    page.tab.wait_for_function("() => (document.querySelector('[data-testid=lesson-p]')?.textContent || '') !== ''")
    assert [round(float(v), 3) for v in page.text("lesson-p").split(", ")] == [0.090, 0.245, 0.665]
    for name, p in (("right", 0.6), ("close", 0.3), ("absurd", 0.1)):
        assert number(-math.log(p)) in page.text(f"lesson-loss-{name}")
    assert page.tab.locator("#worked-ce").text_content().count("0.407606") == 2
    page.testid("lesson-logits").fill("1000, 1001, 1002")
    page.tab.wait_for_function("() => document.getElementById('lesson-naive').textContent.includes('inf')")
    assert [round(float(v), 3) for v in page.text("lesson-p").split(", ")] == [0.090, 0.245, 0.665]
    assert "nan" in page.tab.locator("#lesson-table").text_content()
    page.testid("lesson-logits").fill("1, oops")
    page.tab.wait_for_function("() => document.getElementById('lesson-error').textContent !== ''")
    assert [round(float(v), 3) for v in page.text("lesson-p").split(", ")] == [0.090, 0.245, 0.665]
    page.errors = [e for e in page.errors if "status of 400" not in e]  # the refusal of "oops", shown above
    _draw_and_label(page, ZERO, "0", 0)
    assert "Your digit" in page.tab.locator("#own-loss").text_content()
    page.testid("mode").click()  # plain: the words go, the numbers stay
    assert not page.tab.locator("#step-loss .guide").first.is_visible() and page.testid("lesson-p").is_visible()
    assert "mode=plain" in page.tab.url
    page.testid("mode").click()
    page.tab.locator("#path").screenshot(path=page.tmp_path / "path.png")


def test_26_live_training_on_the_page(page):
    page.tab.wait_for_selector("[data-testid=weights-row-9] canvas")
    before = _canvas(page, "[data-testid=weights-row-4]")
    page.testid("live-from").select_option("zeros")
    page.testid("train-step").click()
    page.tab.wait_for_selector("[data-testid=live-row-4] canvas")
    early = _canvas(page, "[data-testid=live-row-4]")
    page.testid("train-play").click()
    page.tab.wait_for_function(
        "() => parseFloat(document.querySelector('[data-testid=train-val-acc]').textContent) > 0.9", timeout=60000
    )
    page.testid("train-pause").click()
    page.tab.wait_for_function("() => !document.querySelector('[data-testid=train-play]').disabled")
    assert _canvas(page, "[data-testid=live-row-4]") != early  # W's rows changed on screen
    page.tab.wait_for_function(
        f"() => document.querySelector('[data-testid=weights-row-4] canvas').toDataURL() !== {json.dumps(before)}"
    )  # and section 4 shows the page's W now
    steps = page.tab.locator("#live-progress").text_content()
    page.tab.wait_for_timeout(500)
    assert page.tab.locator("#live-progress").text_content() == steps  # paused: nothing runs unseen
    assert page.tab.locator("#live-loss polyline").count() == 1 and page.tab.locator("#live-acc polyline").count() == 2
    assert not page.testid("save").is_disabled()
    page.shot("live")


def test_26_test_accuracy_before_and_after_steps_is_evals_of_the_saved_checkpoint(page, pixels_server, mnist_dir):
    checkpoint, _ = pixels_server
    _draw_and_label(page, ONE, "1", 7)
    page.testid("lr").fill("0.05")
    for step in (1, 2, 3):
        page.testid("learn").click()
        page.tab.wait_for_function(f"() => document.getElementById('steps').textContent.startsWith('{step} ')")
    page.testid("test-score").click()
    page.tab.wait_for_function("() => document.getElementById('test-scored').textContent.startsWith('Test set')")
    scored = page.text("test-scored")
    page.testid("save-name").fill("three-steps")
    page.testid("save").click()
    page.tab.wait_for_function("() => document.getElementById('saved').textContent.startsWith('saved as')")
    saved = checkpoint.parent / "three-steps.npz"
    try:
        after = json.loads(run("eval", "--checkpoint", saved, "--data-dir", mnist_dir, "--json").stdout)
        before = json.loads(run("eval", "--checkpoint", checkpoint, "--data-dir", mnist_dir, "--json").stdout)
    finally:
        saved.unlink()
    a1, a0 = f"{after['accuracy']:.4f}", f"{before['accuracy']:.4f}"
    assert scored.startswith(f"Test set: accuracy {a1},") and f"(the checkpoint: {a0}," in scored
    assert page.tab.locator("#own-step").text_content().endswith(f"test accuracy {a0} → {a1}.")


@pytest.mark.parametrize("front_end", ["conv", "cnn"])
def test_26_w_of_the_conv_front_ends(browser, front_end, conv_trained, cnn_trained, mnist_dir, tmp_path):
    checkpoint = (conv_trained if front_end == "conv" else cnn_trained) / "model.npz"
    proc, url = start_server(checkpoint, mnist_dir)
    page = Page(browser, url, tmp_path)
    try:
        page.tab.wait_for_selector("[data-testid=weights-row-9] canvas")
        assert "10 × 3136" in page.text("weights")
        assert "64·7·7" in page.tab.locator("#weights-how").text_content()
        w = call(url, "/api/weights")[1]
        assert w["cells"] == [7, 7] and len(w["rows"][0]) == 49
        assert _bar(page, "weights-scale")[1] == f"+{w['shown']['limit']}"
        page.draw(ONE)
        page.settled()
        page.testid("weights-row-1").click()
        page.tab.wait_for_function("() => document.getElementById('weights-detail').textContent.includes('z')")
        page.shot(f"weights-{front_end}")
    finally:
        page.close()
        stop(proc)
