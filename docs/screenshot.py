"""Make the pictures of the local page in docs/: the real page, served by the real server, in
Debian's Chromium, with a 2 drawn on the pad by mouse strokes and its true label picked.

    serve.png          the top of the page (the README's picture)
    serve-weights.png  section 4: W's shape and its ten rows, one row pointed at
    serve-path.png     the lesson's path, on the worked examples and the drawn 2, after a step
    serve-live.png     section 9: live training from zeros, paused mid-way
    serve-phone.png    the top of the page on a phone (390×844), the digit drawn by touch
    serve-large.png    the large view for a projector (1024×768)
    serve-zh.png       the page in Chinese

    python docs/screenshot.py --checkpoint runs/latest/model.npz [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

DOCS = Path(__file__).parent
OUT = DOCS / "serve.png"
# A 2 on the 280-px pad: an arc over the top, a diagonal down, a line along the bottom.
TWO = [[(86, 100), (100, 70), (130, 52), (165, 55), (190, 78), (192, 110), (170, 145), (135, 180), (100, 215),
        (88, 228), (120, 226), (160, 224), (200, 226)]]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="runs/latest/model.npz")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    # Served as runs/latest/model.npz from a folder of its own, so the page names no path of this machine.
    work = Path(tempfile.mkdtemp())
    (work / "runs").mkdir()
    (work / "runs" / "latest").symlink_to(Path(a.checkpoint).resolve().parent, target_is_directory=True)
    cmd = [sys.executable, "-m", "mnist_softmax", "serve", "--data-dir", str(Path(a.data_dir).resolve()),
           "--port", "0", "--no-browser"]  # fmt: skip
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=work)
    try:
        url = server.stdout.readline().split(" at ")[1].split()[0]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=a.chromium, args=["--no-sandbox", "--disable-gpu",
                                        "--disable-background-networking", "--no-first-run"])  # fmt: skip
            page = browser.new_page(viewport={"width": 1100, "height": 1000}, device_scale_factor=1)
            page.goto(url)
            page.wait_for_function("() => document.getElementById('model-info').textContent.length > 0")
            box = page.get_by_test_id("canvas").bounding_box()
            for stroke in TWO:
                page.mouse.move(box["x"] + stroke[0][0], box["y"] + stroke[0][1])
                page.mouse.down()
                for x, y in stroke[1:]:
                    page.mouse.move(box["x"] + x, box["y"] + y, steps=4)
                page.mouse.up()
            page.wait_for_function("() => document.getElementById('prediction').textContent !== '–'")
            page.get_by_test_id("label").select_option("2")
            page.wait_for_function("() => document.getElementById('loss').textContent !== '–'")
            page.screenshot(path=OUT, clip={"x": 0, "y": 0, "width": 1100, "height": 760})
            more_shots(page)
            views(browser, url)
            browser.close()
    finally:
        server.terminate()
        server.communicate(timeout=30)
        shutil.rmtree(work)
    for name in ("serve", "serve-weights", "serve-path", "serve-live", "serve-phone", "serve-large", "serve-zh"):
        out = DOCS / f"{name}.png"
        Image.open(out).convert("P", palette=Image.Palette.ADAPTIVE, colors=128).save(out, optimize=True)
        print(f"wrote {out} ({out.stat().st_size // 1024} kB)")


def draw_two(page, box, touch=None) -> None:
    """The 2 on the pad: mouse strokes, or touch events through Chromium's DevTools protocol."""
    scale = box["width"] / 280
    for stroke in TWO:
        points = [(box["x"] + x * scale, box["y"] + y * scale) for x, y in stroke]
        if touch is None:
            page.mouse.move(*points[0])
            page.mouse.down()
            for x, y in points[1:]:
                page.mouse.move(x, y, steps=4)
            page.mouse.up()
            continue
        for kind, (x, y) in [("touchStart", points[0]), *[("touchMove", p) for p in points[1:]]]:
            touch.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]})
        touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    page.wait_for_function("() => document.getElementById('prediction').textContent !== '–'")


def views(browser, url: str) -> None:
    """The phone, the projector's large view, the Chinese page: each with the 2 and its label."""
    shots = [
        ("serve-phone", "", {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
                             "device_scale_factor": 2}),
        ("serve-large", "?view=large", {"viewport": {"width": 1024, "height": 768}}),
        ("serve-zh", "?lang=zh", {"viewport": {"width": 1100, "height": 1000}}),
    ]  # fmt: skip
    for name, query, options in shots:
        context = browser.new_context(**options)
        page = context.new_page()
        page.goto(url + query)
        page.wait_for_function("() => document.getElementById('model-info').textContent.length > 0")
        canvas = page.get_by_test_id("canvas")
        canvas.scroll_into_view_if_needed()
        touch = context.new_cdp_session(page) if options.get("has_touch") else None
        draw_two(page, canvas.bounding_box(), touch)
        page.get_by_test_id("label").select_option("2")
        page.wait_for_function("() => document.getElementById('loss').textContent !== '–'")
        if name != "serve-zh":  # the softmax's numbers, as a phone or the back of a room sees them
            page.evaluate("() => window.scrollTo(0, document.getElementById('s6').offsetTop - 10)")
        page.screenshot(path=DOCS / f"{name}.png")
        context.close()


def more_shots(page) -> None:
    """Section 4 with row 2 pointed at; a learning step, then the lesson's path; live training."""
    page.get_by_test_id("weights-row-2").hover()
    page.wait_for_function("() => document.getElementById('weights-detail').textContent.includes('z')")
    page.locator("#s4").screenshot(path=DOCS / "serve-weights.png")
    page.get_by_test_id("lr").fill("0.005")
    page.get_by_test_id("learn").click()
    page.wait_for_function("() => document.getElementById('steps').textContent.startsWith('1 ')")
    page.get_by_test_id("test-score").click()
    page.wait_for_function("() => document.getElementById('own-step').textContent.includes('→')")
    page.mouse.move(0, 0)
    page.locator("#path").screenshot(path=DOCS / "serve-path.png")
    page.get_by_test_id("live-from").select_option("zeros")
    page.get_by_test_id("train-play").click()
    page.wait_for_function("() => parseFloat(document.getElementById('train-val-acc').textContent) > 0.88")
    page.get_by_test_id("train-pause").click()
    page.wait_for_function("() => !document.getElementById('train-play').disabled")
    page.locator("#s9").screenshot(path=DOCS / "serve-live.png")


if __name__ == "__main__":
    main()
