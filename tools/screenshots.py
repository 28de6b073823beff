"""Screenshots of TensorBoard's pages for a log directory, taken with headless Chromium:

    python -m tools.screenshots LOGDIR [OUT_DIR]      # or: make screenshots LOGDIR=... [SHOTS=OUT_DIR]

Starts `tensorboard --logdir LOGDIR` on a free localhost port, waits until it lists every run of LOGDIR (and
its Custom Scalars and HParams data, where the runs have them), opens each page in a fresh browser profile (the
defaults a new user sees), waits until its charts have drawn their lines, and saves into OUT_DIR (default
docs/screenshots), as 1600 x 1000 PNGs

    timeseries.png               the Time Series page (#timeseries), as a new user first sees it
    timeseries_train_val.png     the same, filtered to ^(train|val)/(acc|loss)$ and unsmoothed
    custom_scalars.png           Custom Scalars (#custom_scalars), the first row's legends ("Matches") opened
    hparams_table.png            HParams, its table view (#hparams)
    hparams_parallel.png         HParams, its parallel-coordinates view (a click, over the DevTools pipe)

then stops TensorBoard. It installs nothing: it needs `chromium` (or chromium-browser, google-chrome) on PATH,
or CHROMIUM=/path/to/browser, and uses only the standard library and the project's tensorboard.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
POLL_S, SETTLE_S = 0.25, 0.5

# JavaScript run in the page until it returns true. FIND_ALL: `all`, every element (shadow roots included), and
# `shown(e)`, whether e is laid out in the viewport. TensorBoard draws a chart's lines only once its data is in.
FIND_ALL = """const all = [];
  const walk = (root) => {
    for (const e of root.querySelectorAll('*')) { all.push(e); if (e.shadowRoot) walk(e.shadowRoot); }
  };
  walk(document);
  const shown = (e) => { const r = e.getBoundingClientRect(); return r.height > 0 && r.top < innerHeight; };"""
# Time Series: every scalar card in view has drawn a line (forceSVG=true: as SVG paths, not in a WebGL worker)
TIMESERIES_READY = """const cards = all.filter((e) => e.localName === 'scalar-card-component' && shown(e));
  return cards.length > 0 && cards.every((card) => card.querySelector('line-chart .series-view > svg path'));"""
# Custom Scalars: every chart in view has drawn its lines; then the first row's "Matches" lists, the charts' legends
# (which series is train, which validation), are opened once.
CUSTOM_SCALARS_READY = """const charts = all.filter((e) => e.localName === 'vz-line-chart2' && shown(e));
  if (!(charts.length > 0 && charts.every((chart) => (chart.shadowRoot || chart).querySelector('path.line'))))
    return false;
  if (window.legendsOpened) return true;
  const toggles = all.filter((e) => e.classList && e.classList.contains('toggle-matches-button') && shown(e));
  toggles.slice(0, 3).forEach((toggle) => toggle.click());
  window.legendsOpened = true;
  return false;"""
HPARAMS_READY = """const grid = all.find((e) => e.localName === 'vaadin-grid');
  return Boolean(grid && grid.items && grid.items.length);"""
# the PARALLEL COORDINATES VIEW tab clicked (again, until its view shows) and the plot's lines drawn
PARALLEL_READY = """const plot = all.find((e) => e.localName === 'tf-hparams-parallel-coords-plot');
  if (plot && shown(plot) && plot.shadowRoot.querySelector('g.foreground path')) return true;
  const tab = all.find((e) => e.localName === 'paper-tab' && /parallel coordinates/i.test(e.textContent));
  if (tab) tab.click();
  return false;"""

TRAIN_VAL = "tagFilter=%5E(train%7Cval)%2F(acc%7Closs)%24&smoothing=0"  # ^(train|val)/(acc|loss)$, unsmoothed
# (file name, URL path and fragment, the TensorBoard plugin the page needs, when it is drawn)
PAGES = (
    ("timeseries.png", "?forceSVG=true#timeseries", "scalars", TIMESERIES_READY),
    ("timeseries_train_val.png", f"?forceSVG=true&{TRAIN_VAL}#timeseries", "scalars", TIMESERIES_READY),
    ("custom_scalars.png", "#custom_scalars", "custom_scalars", CUSTOM_SCALARS_READY),
    ("hparams_table.png", "#hparams", "hparams", HPARAMS_READY),
    ("hparams_parallel.png", "#hparams", "hparams", PARALLEL_READY),
)


class ScreenshotError(RuntimeError):
    pass


def find_browser() -> str | None:
    """The Chromium to use: $CHROMIUM, else the first of BROWSERS on PATH; None when there is none."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"])
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def expected_runs(logdir: Path) -> set[str]:
    """TensorBoard's run names for LOGDIR: every folder that holds an event file, relative to LOGDIR."""
    folders = {path.parent for path in logdir.rglob("events.out.tfevents.*")}
    return {"." if folder == logdir else folder.relative_to(logdir).as_posix() for folder in folders}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


@contextlib.contextmanager
def tensorboard(logdir: Path, runs: set[str], timeout: float, log_file: Path) -> Iterator[tuple[str, set[str]]]:
    """A TensorBoard on LOGDIR, once it lists RUNS and its plugins stopped changing: (its URL, active plugins)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1"]
    with open(log_file, "wb") as log:  # its own session: stopping it stops its data server too
        process = subprocess.Popen([*command, "--port", str(port)], stdout=log, stderr=log, start_new_session=True)
    try:
        deadline, last, stable_since = time.monotonic() + timeout, None, 0.0
        while True:
            if process.poll() is not None:
                raise ScreenshotError(f"tensorboard exited with {process.returncode}:\n{log_file.read_text()[-2000:]}")
            try:
                listed = set(get_json(f"{url}/data/runs"))
                plugins = get_json(f"{url}/data/plugins_listing")
                active = {name for name, plugin in plugins.items() if plugin.get("enabled")}
                tags = get_json(f"{url}/data/plugin/scalars/tags") if "scalars" in active else {}
                state = (frozenset(listed), frozenset(active), json.dumps(tags, sort_keys=True))
            except OSError:  # not answering yet
                listed, active, state = set(), set(), None
            if state != last:
                last, stable_since = state, time.monotonic()
            # every run listed, and no new run, plugin or tag for 1.5 s: the data (layouts, hparams) is in
            if runs <= listed and time.monotonic() - stable_since > 1.5:
                break
            if time.monotonic() > deadline:
                if not listed:
                    raise ScreenshotError(f"tensorboard did not list any run in {timeout:.0f} s ({url})")
                print(f"warning: after {timeout:.0f} s tensorboard lists {len(listed & runs)} of {len(runs)} runs")
                break
            time.sleep(POLL_S)
        yield url, active
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def browser_command(browser: str, profile: Path, width: int, height: int) -> list[str]:
    command = [browser, "--headless=new", "--disable-gpu", "--hide-scrollbars", "--mute-audio", "--no-first-run"]
    command += ["--disable-extensions", f"--user-data-dir={profile}", f"--window-size={width},{height}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--no-sandbox")  # Chromium refuses to start as root with its sandbox
    return [*command, "--remote-debugging-pipe", "about:blank"]


class Browser:
    """Headless Chromium with a fresh profile (TensorBoard's defaults, as on a first visit), driven over
    --remote-debugging-pipe: the DevTools protocol as NUL-terminated JSON, commands on the browser's fd 3,
    answers on its fd 4. Enough to open a page, run JavaScript in it and take a screenshot; no websocket."""

    def __init__(self, browser: str, width: int, height: int) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="tb-shot-", ignore_cleanup_errors=True)
        self.log = Path(self._tmp.name) / "chromium.log"
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()

        def fds_3_and_4() -> None:  # in the child, before exec: the pipes become its fds 3 and 4
            read, write = fcntl.fcntl(commands_read, fcntl.F_DUPFD, 10), fcntl.fcntl(answers_write, fcntl.F_DUPFD, 10)
            os.dup2(read, 3)
            os.dup2(write, 4)

        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                browser_command(browser, Path(self._tmp.name) / "profile", width, height),
                pass_fds=(3, 4),
                preexec_fn=fds_3_and_4,
                stdout=log,
                stderr=log,
            )
        os.close(commands_read)
        os.close(answers_write)
        self._buffer, self._id = b"", 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.call("Emulation.setDeviceMetricsOverride", self.session, **metrics)

    def call(self, method: str, session: str | None = None, timeout: float = 30, **params: object) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        try:
            os.write(self._commands, json.dumps(message).encode() + b"\0")
        except OSError as error:
            raise ScreenshotError(f"the browser is gone ({error}): {self.log.read_text()[-1500:]}") from None
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                answer = json.loads(raw)
                if answer.get("id") == self._id:  # the rest are events, which we do not use
                    if "error" in answer:
                        raise ScreenshotError(f"DevTools {method}: {answer['error']}")
                    return answer["result"]
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._answers], [], [], left)[0]:
                raise ScreenshotError(f"DevTools {method}: no answer in {timeout:.0f} s")
            chunk = os.read(self._answers, 1 << 20)
            if not chunk:
                raise ScreenshotError(f"the browser closed its pipe: {self.log.read_text()[-1500:]}")
            self._buffer += chunk

    def evaluate(self, expression: str) -> object:
        result = self.call("Runtime.evaluate", self.session, expression=expression, returnByValue=True)
        return result["result"].get("value")

    def screenshot(self, url: str, ready_js: str, path: Path, timeout: float) -> bool:
        """Opens URL, runs READY_JS every POLL_S until it returns true (or TIMEOUT s passed: then False), and saves
        the viewport as PATH."""
        self.call("Page.navigate", self.session, url=url)
        deadline, ready = time.monotonic() + timeout, False
        while not ready and time.monotonic() < deadline:
            time.sleep(POLL_S)
            ready = bool(self.evaluate(f"(() => {{ {FIND_ALL} {ready_js} }})()"))
        time.sleep(SETTLE_S)  # the last frame painted
        png = self.call("Page.captureScreenshot", self.session, format="png")["data"]
        path.write_bytes(base64.b64decode(png))
        return ready

    def close(self) -> None:
        with contextlib.suppress(ScreenshotError):
            self.call("Browser.close", timeout=5)
        for fd in (self._commands, self._answers):
            os.close(fd)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._tmp.cleanup()


def compact(path: Path) -> None:
    """Re-encode a PNG with a 256-colour palette: the same pixels to the eye, a third of the bytes (a 1600 x 1000
    page: 50-90 KB). A no-op without Pillow (matplotlib's dependency)."""
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(colors=256)
    palette.save(path, optimize=True)


def take_screenshots(
    logdir: Path, out_dir: Path, *, width: int = 1600, height: int = 1000, timeout: float = 60
) -> tuple[list[Path], list[str]]:
    """The PAGES of LOGDIR's TensorBoard as PNGs in OUT_DIR: (the files saved, a line per page not drawn in time).
    TIMEOUT: the seconds TensorBoard gets to list the runs, and each page to draw its charts."""
    browser = find_browser()
    if browser is None:
        raise ScreenshotError(f"no Chromium on PATH (looked for {', '.join(BROWSERS)}; or set CHROMIUM=...)")
    if not logdir.is_dir():
        raise ScreenshotError(f"{logdir} is not a folder")
    runs = expected_runs(logdir)
    if not runs:
        raise ScreenshotError(f"{logdir} holds no TensorBoard event file (events.out.tfevents.*)")
    out_dir.mkdir(parents=True, exist_ok=True)
    saved, problems = [], []
    with tempfile.TemporaryDirectory(prefix="tb-log-") as tmp:
        started = time.monotonic()
        with tensorboard(logdir, runs, timeout, Path(tmp) / "tensorboard.log") as (url, active):
            print(f"tensorboard: {len(runs)} runs of {logdir} at {url}, ready in {time.monotonic() - started:.1f} s")
            for name, path, plugin, ready_js in PAGES:
                if plugin not in active:
                    problems.append(f"{name}: not taken, the runs have no {plugin} data")
                    continue
                started, page = time.monotonic(), Browser(browser, width, height)
                try:
                    drawn = page.screenshot(f"{url}/{path}", ready_js, out_dir / name, timeout)
                finally:
                    page.close()
                compact(out_dir / name)
                saved.append(out_dir / name)
                print(f"saved {out_dir / name} ({time.monotonic() - started:.1f} s)")
                if not drawn:
                    problems.append(f"{name}: its charts were not all drawn after {timeout:.0f} s; look at it")
    return saved, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.screenshots", description=__doc__.split("\n\n")[0].rstrip(":") + "."
    )
    parser.add_argument("logdir", type=Path, help="a TensorBoard log folder, e.g. outputs/multirun/<date>_<time>")
    parser.add_argument("out_dir", type=Path, nargs="?", default=Path("docs/screenshots"), help="(docs/screenshots)")
    parser.add_argument("--width", type=int, default=1600, help="the browser window (1600 x 1000)")
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=60, help="seconds to load the logs, and per page (60)")
    args = parser.parse_args(argv)
    try:
        _, problems = take_screenshots(
            args.logdir, args.out_dir, width=args.width, height=args.height, timeout=args.timeout
        )
    except ScreenshotError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
