"""serve.py: the page and its /predict answer from the package alone, on localhost; in a real headless Chromium a
test digit drawn with the page's own pointer events is read back as the network reads it (skipped without
Chromium)."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_study.errors import UserError
from mnist_study.inference.checkpoints import load_trained
from mnist_study.inference.serve import STATIC, start_server
from tools import demo_screenshot
from tools.screenshots import Browser, find_browser

from .conftest import ROOT
from .helpers.images import png
from .helpers.trained import best_checkpoint, glyph_test_set, network_predictions
from .pause import Run


@pytest.fixture
def server_url(glyph_run: Path) -> Iterator[str]:
    with demo_screenshot.demo_server(best_checkpoint(glyph_run)) as url:
        yield url


def request(url: str, data: bytes | None = None) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def test_the_page_comes_from_the_package_alone() -> None:
    files = {entry.name for entry in STATIC.iterdir()}
    assert files == {"index.html", "demo.js", "demo.css"}
    for name in files:
        text = (STATIC / name).read_text()
        assert "://" not in text.replace("http://www.w3.org", ""), name  # no CDN, no other server


def test_the_server_answers_the_page_and_predictions(glyph_run: Path, server_url: str) -> None:
    assert server_url.startswith("http://127.0.0.1:")
    status, kind, body = request(server_url)
    assert status == 200 and kind.startswith("text/html") and b'<canvas id="pad"' in body
    assert request(server_url + "demo.js")[:2] == (200, "text/javascript; charset=utf-8")
    assert json.loads(request(server_url + "model")[2]) == {
        "network": "cnn-none", "checkpoint": best_checkpoint(glyph_run).name
    }  # fmt: skip
    for missing in ("nothing.html", "../serve.py", "%2e%2e/config.py"):
        assert request(server_url + missing)[0] == 404

    digits, _ = glyph_test_set(glyph_run)
    drawn = 255 - np.asarray(Image.fromarray(digits[0]).resize((280, 280), Image.Resampling.BICUBIC))
    status, _, body = request(server_url + "predict", png(drawn))
    answer = json.loads(body)
    assert status == 200 and answer["class"] == network_predictions(glyph_run, digits[:1])[0]
    assert len(answer["probabilities"]) == 10 and sum(answer["probabilities"]) == pytest.approx(1, abs=1e-4)
    assert len(answer["digit"]) == 784 and max(answer["digit"]) == 255

    for data, status, words in [
        (png(np.full((280, 280), 255, dtype=np.uint8)), 422, "the drawing is blank"),
        (b"not a picture", 422, "the drawing is not an image file"),
        (b"", 400, "send the drawing as a PNG"),
    ]:
        got, _, body = request(server_url + "predict", data)
        assert got == status and json.loads(body)["error"].startswith(words)


def test_serve_py_listens_on_localhost_and_stops_on_ctrl_c(glyph_run: Path, tmp_path: Path) -> None:
    options = [f"ckpt_path={best_checkpoint(glyph_run)}", "port=0", f"hydra.run.dir={tmp_path / 'run'}"]
    server = Run("serve.py", *options, cwd=ROOT, log_dir=tmp_path)
    try:
        line = server.wait_for_line("serving ")  # the first line says where it serves
        url = line.split(" at ", 1)[1].split(": open", 1)[0]
        assert url.startswith("http://127.0.0.1:"), line
        assert json.loads(request(url + "model")[2])["network"] == "cnn-none"
    finally:
        server.proc.send_signal(signal.SIGINT)
        code, _, errors = server.finish(timeout=60)
    assert code == 128 + signal.SIGINT and "Traceback" not in errors, errors


def test_a_port_in_use_is_one_line(glyph_run: Path) -> None:
    trained = load_trained(best_checkpoint(glyph_run))
    first = start_server(trained, "127.0.0.1", 0)
    try:
        port = first.server_address[1]
        with pytest.raises(UserError, match=f"cannot serve on host=127.0.0.1 port={port}: .*pass another port="):
            start_server(trained, "127.0.0.1", port)
    finally:
        first.server_close()


@pytest.mark.skipif(find_browser() is None, reason="needs chromium on PATH (or CHROMIUM=...)")
def test_a_digit_drawn_in_chromium_is_read_as_the_network_reads_it(glyph_run: Path, server_url: str) -> None:
    digits, _ = glyph_test_set(glyph_run)
    digits = digits[:4]
    expected = network_predictions(glyph_run, digits)
    browser = Browser(find_browser(), 1000, 560)
    try:
        demo_screenshot.open_page(browser, server_url)
        read = []
        for digit in digits:
            browser.evaluate("document.getElementById('clear').click(); document.body.dataset.predictions = '0'")
            demo_screenshot.draw_digit(browser, digit)  # pointer events, row by row: a few dozen strokes
            answer = demo_screenshot.page_answer(browser)
            read.append(answer["class"])
            assert sum(answer["bars"]) == pytest.approx(100, abs=0.5)  # 10 bars, in %
            assert max(answer["bars"]) == answer["bars"][answer["class"]]
            assert int(browser.evaluate("document.body.dataset.predictions")) >= 2  # live: while drawing, too
    finally:
        browser.close()
    assert read == expected.tolist()
