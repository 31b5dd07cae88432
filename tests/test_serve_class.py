"""A class at once (issue 27): many pages on one server, the page from the keyboard and for screen
readers, on a phone, on a projector, and in Chinese. Browser tests in Chromium against the real
server (mandatory under CI), API tests against it or in this process."""

import json
import re
import threading
import time

import numpy as np
import pytest
from serving import ONE, ZERO, Page, call, start_server, stop

from mnist_softmax.serve.sessions import MAX_SESSIONS


def _png(a: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def walk_through(page: Page, label: str = "7") -> None:
    """Everything the page can show: a digit drawn and its label, a learning step, a frame of live
    training, a test score, a confusion cell's digits, and a row of W pointed at."""
    page.draw(ONE)
    page.settled()
    page.testid("label").select_option(label)
    page.tab.wait_for_function("() => document.getElementById('loss').textContent !== '–'")
    page.testid("learn").click()
    page.tab.wait_for_selector("[data-testid=dz-9]")
    page.testid("test-score").click()
    page.tab.wait_for_function("() => document.getElementById('own-step').textContent.includes('→')")
    page.testid("train-step").click()
    page.tab.wait_for_selector("[data-testid=live-row-9] canvas")
    page.tab.wait_for_selector("[data-testid=cell-4-9]")
    page.testid("cell-4-9").click()
    page.tab.wait_for_selector("[data-testid=cell] button.thumb")
    page.testid("weights-row-2").focus()
    page.tab.wait_for_function("() => document.getElementById('weights-detail').textContent.includes('=')")


# ------------------------------------------------------------------------------------------ capacity


def test_27_sixty_pages_keep_their_own_steps_at_once(pixels_server, mnist):
    """60 pages, each taking a learning step and drawing at once: none expires, each keeps its own
    weights (its next answer is its own step's), and the bound is far above a class."""
    _, url = pixels_server
    assert MAX_SESSIONS >= 60
    keys = [call(url, "/api/session", b"")[1]["session"] for _ in range(60)]
    answers: dict[int, tuple] = {}

    def page(i: int) -> None:
        image, label = _png(mnist.test_images[i]), (int(mnist.test_labels[i]) + 1) % 10
        learned = call(url, f"/api/learn?session={keys[i]}&label={label}&lr=0.01", image)
        again = call(url, f"/api/predict?session={keys[i]}&label={label}", image)
        answers[i] = (learned[0], again[0], learned[1]["after"]["probabilities"], again[1]["probabilities"])

    threads = [threading.Thread(target=page, args=(i,)) for i in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(answers) == 60
    for i, (s1, s2, after, again) in answers.items():
        assert s1 == s2 == 200 and after == again, i
    assert all(call(url, f"/api/reset?session={k}", b"")[0] == 200 for k in keys)  # none gave way


def test_27_the_page_works_at_once_while_the_run_is_scored_in_the_background(cnn_trained, mnist_dir, mnist):
    """With the cnn (whose test set takes seconds to score), a drawing is answered while the scores
    are still coming: nothing waits for them, and they arrive equal to eval's."""
    proc, url = start_server(cnn_trained / "model.npz", mnist_dir)
    try:
        status, answer = call(url, "/api/predict?label=7", _png(mnist.test_images[0]))
        first = call(url, "/api/confusion")[1]
        assert status == 200 and answer["prediction"] == 7
        assert first == {"ready": False}  # the answer came before the scores
        deadline = time.monotonic() + 120
        while not (scores := call(url, "/api/confusion")[1])["ready"]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert sum(map(sum, scores["confusion"])) == 10000
    finally:
        stop(proc)


# ------------------------------------------------------------------------------------------ languages

# Words that are the same in every language: the lesson's symbols and names, file formats, the
# front ends' names (config values) and the command the page quotes.
SAME_IN_EVERY_LANGUAGE = {
    "logits", "softmax", "exp", "log", "max", "argmax", "onehot", "lr", "mnist", "png", "jpeg", "dl", "dz", "dw",
    "db", "nan", "inf", "pixels", "conv", "cnn", "float64", "np", "serve", "download", "mnist-softmax", "σ", "h",
    "logit", "python", "predict", "train", "eval", "dl/dw", "dl/db", "dl/dz", "model-learned",
}  # fmt: skip


def _english_words(page: Page, allowed: set[str]) -> list[str]:
    """Words of Latin letters the reader can see or hear: text, aria-labels, titles, placeholders,
    alt texts, minus <code>, elements in another language (lang="en"), and the words `allowed`."""
    texts = page.tab.evaluate(
        """() => {
            const out = [];
            const skip = (el) => el.closest('code, [lang="en"], script, style, [hidden], .sr-only-skip');
            const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
            while (walker.nextNode()) {
                const node = walker.currentNode;
                if (!skip(node.parentElement) && node.parentElement.offsetParent !== null) out.push(node.textContent);
            }
            for (const el of document.querySelectorAll('[aria-label], [title], [placeholder], [alt]')) {
                if (skip(el)) continue;
                for (const a of ['aria-label', 'title', 'placeholder', 'alt']) {
                    if (el.getAttribute(a)) out.push(el.getAttribute(a));
                }
            }
            out.push(document.title);
            return out;
        }"""
    )
    text = " ".join(texts)
    for path in (a for a in allowed if "/" in a):
        text = text.replace(path, " ")
    text = re.sub(r"\d+(\.\d+)?(e[+-]?\d+)?", " ", text)  # numbers, 1.266e-05 too
    words = re.findall(r"[A-Za-z][A-Za-z0-9_.\-/]*", text)
    return sorted({w for w in words if w.lower().strip(".-") not in allowed and not re.fullmatch(r"[A-Za-z]", w)})


def test_27_the_chinese_page_has_no_english_left(browser, pixels_server, tmp_path):
    checkpoint, url = pixels_server
    page = Page(browser, url + "?lang=zh", tmp_path)
    try:
        assert page.tab.evaluate("document.documentElement.lang") == "zh-Hans"
        walk_through(page)
        page.testid("lesson-logits").fill("1, oops")
        page.tab.wait_for_function("() => document.getElementById('lesson-error').textContent !== ''")
        page.errors = [e for e in page.errors if "status of 400" not in e]  # the refusal, shown in Chinese
        path_words = {str(checkpoint)}
        left = _english_words(page, SAME_IN_EVERY_LANGUAGE | path_words)
        assert left == [], " ".join(left)
        for term in ("全连接层", "权重 W", "特征 x", "logits", "softmax", "概率", "损失", "交叉熵", "梯度", "学习率"):
            assert term in page.tab.locator("body").inner_text(), term
        page.shot("zh")
    finally:
        page.close()


def test_27_the_language_follows_the_browser_the_switch_and_the_url(browser, pixels_server, tmp_path):
    context = browser.new_context(locale="zh-CN", viewport={"width": 1200, "height": 900})
    tab = context.new_page()
    tab.goto(pixels_server[1])
    tab.wait_for_function("() => document.getElementById('model-info').textContent.length > 0")
    assert tab.locator("#h4s").inner_text().endswith("全连接层：训练找到的权重 W")  # the browser's language
    tab.get_by_test_id("lang").click()
    tab.wait_for_function("() => document.documentElement.lang === 'en'")
    assert "lang=en" in tab.url and tab.locator("#h4s").inner_text().endswith("The layer: W, what training found")
    tab.reload()  # the choice is kept in the URL
    tab.wait_for_function("() => document.getElementById('model-info').textContent.length > 0")
    assert tab.evaluate("document.documentElement.lang") == "en"
    context.close()


def test_27_a_refused_image_is_said_in_chinese(browser, pixels_server, tmp_path):
    from userstyle import NEGATIVES

    page = Page(browser, pixels_server[1] + "?lang=zh", tmp_path)
    page.refusals_expected = True
    try:
        for name in ("a blank page", "specks on a page", "a single pixel", "a thin line"):
            path = NEGATIVES[name](tmp_path, name.replace(" ", "-"), np.random.default_rng(3))
            page.testid("file").set_input_files(str(path))
            page.tab.wait_for_function("() => !document.getElementById('error').hidden")
            text = page.text("error")
            assert "没有找到" in text and not re.search(r"[A-Za-z]{3,}", text.replace("MNIST", "")), (name, text)
            page.testid("clear").click()
    finally:
        page.close()


def test_27_every_refusal_of_an_image_and_the_api_has_words_in_every_language():
    """Each ImageError raised by the image rules, and each ApiError code, has its sentence in the
    Chinese table (the English page shows the server's own words, the CLI's)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "mnist_softmax"
    zh = json.loads((root / "web" / "i18n-zh.json").read_text())
    codes = set()
    for path in [*(root / "images").glob("*.py"), *(root / "serve").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("ImageError", "Reason", "ApiError"):
                code = node.args[2 if node.func.id == "ApiError" else 1] if len(node.args) > (
                    2 if node.func.id == "ApiError" else 1) else None  # fmt: skip
                if isinstance(code, ast.Constant) and isinstance(code.value, str):
                    codes.add(code.value)
                elif isinstance(code, ast.IfExp):
                    codes |= {code.body.value, code.orelse.value}
    assert len(codes) > 30 and {c for c in codes if f"error-{c}" not in zh} == set()


# ------------------------------------------------------------------------------------------ projector


def test_27_the_large_view_has_no_text_under_18_px_at_1024_by_768(browser, pixels_server, tmp_path):
    tab_page = Page(browser, pixels_server[1] + "?view=large", tmp_path)
    page = tab_page
    try:
        page.tab.set_viewport_size({"width": 1024, "height": 768})
        assert page.testid("large").get_attribute("aria-pressed") == "true"
        walk_through(page)
        small = page.tab.evaluate(
            """() => {
                const out = [];
                const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
                while (walker.nextNode()) {
                    const el = walker.currentNode.parentElement;
                    if (!walker.currentNode.textContent.trim() || el.offsetParent === null) continue;
                    const size = parseFloat(getComputedStyle(el.closest('svg') ? walker.currentNode.parentElement
                                                                               : el).fontSize);
                    if (size < 18) out.push(`${size}px: ${walker.currentNode.textContent.trim().slice(0, 40)}`);
                }
                return out;
            }"""
        )
        assert small == [], "\n".join(small)
        pictures = page.tab.evaluate(
            "() => [...document.querySelectorAll('.class canvas, .row-card canvas')]"
            ".map(c => c.getBoundingClientRect().width)"
        )
        assert pictures and min(pictures) >= 140
        page.shot("large")
        page.testid("large").click()  # and back: the switch, kept in the URL
        assert "view=large" not in page.tab.url
    finally:
        page.close()


# ------------------------------------------------------------------------------------------ phone


def test_27_on_a_phone_every_number_is_on_screen_without_sideways_scrolling(browser, pixels_server, tmp_path):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                                  device_scale_factor=3)  # fmt: skip
    tab = context.new_page()
    errors = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.goto(pixels_server[1])
    tab.wait_for_function("() => document.getElementById('model-info').textContent.length > 0")
    canvas = tab.get_by_test_id("canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    cdp = context.new_cdp_session(tab)
    scale = box["width"] / 280
    points = [(box["x"] + x * scale, box["y"] + y * scale) for x, y in ZERO[0]]
    for kind, (x, y) in [("touchStart", points[0]), *[("touchMove", p) for p in points[1:]]]:
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    tab.wait_for_function("() => document.getElementById('prediction').textContent === '0'")  # drawn by touch
    tab.get_by_test_id("label").select_option("0")
    tab.wait_for_function("() => document.getElementById('loss').textContent !== '–'")
    tab.get_by_test_id("learn").click()
    tab.wait_for_selector("[data-testid=dz-9]")
    tab.get_by_test_id("train-step").click()
    tab.wait_for_selector("[data-testid=live-row-9] canvas")
    tab.wait_for_selector("[data-testid=cell-4-9]")
    assert tab.evaluate("() => document.documentElement.scrollWidth") <= 390
    # A table wider than the screen scrolls inside its own box, which says so (a shadow at its edge).
    boxes = tab.evaluate(
        """() => [...document.querySelectorAll('table')].filter(t => t.offsetParent).map(t => {
            const box = t.closest('.scroll');
            return {id: t.id || t.className, boxed: !!box, wider: box ? box.scrollWidth > box.clientWidth : false,
                    right: t.getBoundingClientRect().right, cue: box ? getComputedStyle(box).backgroundImage : ''};
        })"""
    )
    for b in boxes:
        assert b["boxed"] or b["right"] <= 390, b
        if b["wider"]:
            assert "gradient" in b["cue"], b
    assert not next(b for b in boxes if b["id"] == "softmax")["wider"]  # p and exp of every class, all in view
    tab.screenshot(path=tmp_path / "phone.png", full_page=True)
    assert errors == []
    context.close()


# ------------------------------------------------------------------------------------------ keyboard


def _tab_to(page: Page, testid: str, limit: int = 400) -> None:
    """Press Tab until the element with this test id has the focus (it is in the tab order), and
    check that the focus can be seen."""
    for _ in range(limit):
        page.tab.keyboard.press("Tab")
        if page.tab.evaluate(f"() => document.activeElement?.dataset?.testid === {json.dumps(testid)}"):
            outline = page.tab.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
            assert outline not in ("none", ""), (testid, outline)
            return
    pytest.fail(f"{testid} cannot be reached with Tab")


def test_27_the_whole_lesson_from_the_keyboard_with_no_serious_accessibility_fault(browser, pixels_server, tmp_path):
    from axe_playwright_python.sync_playwright import Axe

    page = Page(browser, pixels_server[1], tmp_path)
    try:
        page.tab.wait_for_selector("[data-testid=example-3]")
        _tab_to(page, "example-3")  # a test digit from the keyboard
        page.tab.keyboard.press("Enter")
        page.settled("3")
        _tab_to(page, "lesson-logits")  # the softmax editor
        page.tab.keyboard.press("Control+A")
        page.tab.keyboard.type("1000, 1001, 1002")
        page.tab.wait_for_function("() => document.getElementById('lesson-naive').textContent.includes('inf')")
        page.errors = [e for e in page.errors if "status of 400" not in e]  # "1000," while typing, said on the page
        _tab_to(page, "weights-row-3")  # a row of W, and what it does to the digit
        page.tab.wait_for_function("() => document.getElementById('weights-detail').textContent.includes('z')")
        assert page.testid("label").input_value() == "3"  # a test digit brings its label
        _tab_to(page, "lr")
        page.tab.keyboard.press("Control+A")
        page.tab.keyboard.type("0.01")
        _tab_to(page, "learn")
        page.tab.keyboard.press("Enter")
        page.tab.wait_for_selector("[data-testid=dz-9]")
        _tab_to(page, "train-step")
        page.tab.keyboard.press("Enter")
        page.tab.wait_for_selector("[data-testid=live-row-9] canvas")
        page.tab.wait_for_selector("[data-testid=cell-4-9]")
        _tab_to(page, "cell-4-9")  # a confusion cell, then one of its digits
        page.tab.keyboard.press("Enter")
        page.tab.wait_for_selector("[data-testid=cell] button.thumb")
        assert page.tab.evaluate("() => document.activeElement.dataset.testid.startsWith('test-digit-')")
        page.tab.keyboard.press("Enter")
        page.settled("9")
        # The answer is announced (a live region), the readouts of a picture follow the arrow keys.
        page.tab.wait_for_function("() => document.getElementById('announce').textContent.includes('9')")
        page.tab.locator("#digit").focus()
        page.tab.keyboard.press("ArrowRight")
        assert page.tab.locator("#digit-readout").text_content().startswith("pixel (row 14, column 15)")
        results = Axe().run(page.tab)
        serious = [v for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
        assert serious == [], [(v["id"], v["help"], [n["target"] for n in v["nodes"][:3]]) for v in serious]
    finally:
        page.close()
