"""The browser demo (serve.py) driven in headless Chromium: a test-set digit drawn onto its canvas through the
page's own pointer events, the page's answer read back, and a screenshot:

    python -m tools.demo_screenshot CKPT [OUT]     # OUT: docs/screenshots/demo.png

It serves CKPT on a free localhost port (inference.serve), draws test image --index (default 0) of the data in
--data-dir (default: data) and saves the page, 1000 x 560, as OUT. It needs `chromium` on PATH, as tools.screenshots.
tests/test_serve.py draws with the same functions.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tools.screenshots import POLL_S, Browser, ScreenshotError, compact, find_browser

CELL = 10  # canvas pixels per MNIST pixel: the 280-pixel pad holds the 28 x 28 field
INK = 170  # the pixels drawn: those at least this bright (the pen is wider than a pixel)
LOADED = "document.querySelectorAll('#bars li').length === 10 && document.body.dataset.busy === 'false'"
ANSWERED = "document.body.dataset.busy === 'false' && Number(document.body.dataset.predictions) > 0"


@contextmanager
def demo_server(ckpt_path: str | Path) -> Iterator[str]:
    """serve.py's server for `ckpt_path` on a free localhost port, in a thread: yields its URL."""
    from mnist_study.inference.checkpoints import load_trained
    from mnist_study.inference.serve import start_server

    server = start_server(load_trained(ckpt_path), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def open_page(browser: Browser, url: str, timeout: float = 30) -> None:
    browser.call("Page.navigate", browser.session, url=url)
    wait_for(browser, LOADED, timeout)


def wait_for(browser: Browser, condition: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not browser.evaluate(f"(() => {{ try {{ return Boolean({condition}); }} catch (e) {{ return false; }} }})()"):
        if time.monotonic() > deadline:
            raise ScreenshotError(f"the page did not get to `{condition}` in {timeout:.0f} s")
        time.sleep(POLL_S)


def draw_digit(browser: Browser, digit: np.ndarray) -> None:
    """Draw a 28 x 28 uint8 digit (ink bright) on the pad as a person would: one mouse stroke along each row's run of
    ink, through DevTools' Input.dispatchMouseEvent, which the page receives as pointer events."""
    box = browser.evaluate("(() => { const r = pad.getBoundingClientRect(); return [r.left, r.top, r.width]; })()")
    left, top, width = box
    scale = width / (28 * CELL)
    for row in range(28):
        ink = np.flatnonzero(digit[row] >= INK)
        if not len(ink):
            continue
        runs = np.split(ink, np.flatnonzero(np.diff(ink) > 1) + 1)
        for run in runs:
            y = top + (row + 0.5) * CELL * scale
            xs = [left + (column + 0.5) * CELL * scale for column in (run[0], run[-1])]
            mouse(browser, "mousePressed", xs[0], y)
            mouse(browser, "mouseMoved", (xs[0] + xs[1]) / 2, y)
            mouse(browser, "mouseMoved", xs[1], y)
            mouse(browser, "mouseReleased", xs[1], y)


def mouse(browser: Browser, kind: str, x: float, y: float) -> None:
    buttons = 0 if kind == "mouseReleased" else 1
    browser.call(
        "Input.dispatchMouseEvent", browser.session, type=kind, x=x, y=y, button="left", buttons=buttons, clickCount=1
    )


def page_answer(browser: Browser, timeout: float = 60) -> dict:
    """The page's prediction once it has answered the finished drawing: class (None for '?'), the 10 bar values
    (in %) and its message line."""
    wait_for(browser, ANSWERED, timeout)
    answer = browser.evaluate(
        """JSON.stringify({digit: document.getElementById('digit').textContent,
             bars: [...document.querySelectorAll('#bars .value')].map((e) => e.textContent),
             message: document.getElementById('message').textContent})"""
    )
    found = json.loads(answer)
    digit = found["digit"]
    return {
        "class": int(digit) if digit.isdigit() else None,
        "bars": [float(v.rstrip("%")) if v[:1].isdigit() else None for v in found["bars"]],
        "message": found["message"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.demo_screenshot", description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt_path", help="a .ckpt file saved by train.py")
    parser.add_argument("out", type=Path, nargs="?", default=Path("docs/screenshots/demo.png"))
    parser.add_argument("--data-dir", default="data", help="where MNIST's IDX files are (data)")
    parser.add_argument("--index", type=int, default=0, help="which test image to draw (0)")
    args = parser.parse_args(argv)
    browser_path = find_browser()
    if browser_path is None:
        print("error: no Chromium on PATH (or set CHROMIUM=...)", file=sys.stderr)
        return 1
    from mnist_study.data import mnist_files

    images, labels = mnist_files.load_split(mnist_files.ensure_mnist(args.data_dir), train=False)
    with demo_server(args.ckpt_path) as url:
        browser = Browser(browser_path, 1000, 560)
        try:
            open_page(browser, url)
            draw_digit(browser, images[args.index])
            answer = page_answer(browser)
            time.sleep(0.5)  # the bars' transition
            png = browser.call("Page.captureScreenshot", browser.session, format="png")["data"]
        finally:
            browser.close()
    import base64

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(base64.b64decode(png))
    compact(args.out)
    print(f"test image {args.index} (a {labels[args.index]}): the page reads {answer['class']}; saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
