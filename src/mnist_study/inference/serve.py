"""`python serve.py ckpt_path=...`: one page on which a person draws a digit with the mouse, a pen or a finger and
sees, while drawing, the class a checkpoint's network predicts and its 10 probabilities as bars.

Python's standard library serves it (http.server's ThreadingHTTPServer), from the package's static/ folder and
nothing else (no CDN), on 127.0.0.1 unless host= says otherwise. The page posts the canvas as a PNG to
/predict; the server prepares it as predict.py prepares a file (inference.images) and answers with JSON:
{"class", "probabilities", "digit": the 28 x 28 pixels the network saw}, or {"error": one line} for a drawing that
is no digit (a blank canvas). The network predicts one request at a time."""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

import torch
from omegaconf import DictConfig

from mnist_study.errors import UserError
from mnist_study.inference.checkpoints import TrainedModel, load_trained
from mnist_study.inference.config import ServeConfig, check_values
from mnist_study.inference.images import ImageProblem, as_batch, prepare
from mnist_study.runs.signals import Terminated

log = logging.getLogger(__name__)
STATIC = resources.files("mnist_study.inference") / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css"}
MAX_UPLOAD = 4 * 1024 * 1024  # bytes: a canvas PNG is a few kB


class DigitServer(ThreadingHTTPServer):
    daemon_threads = True  # a browser's open connection does not hold up a shutdown

    def __init__(self, address: tuple[str, int], trained: TrainedModel) -> None:
        super().__init__(address, DemoHandler)
        self.trained = trained
        self.predicting = threading.Lock()
        self.pages = {f"/{entry.name}": entry for entry in STATIC.iterdir() if entry.is_file()}

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"

    def predict(self, png: bytes) -> dict[str, Any]:
        digit = prepare(png, "the drawing")
        with self.predicting, torch.inference_mode():
            probabilities = self.trained.classifier(as_batch([digit])).float().softmax(1)[0]
        return {
            "class": int(probabilities.argmax()),
            "probabilities": [round(float(p), 6) for p in probabilities],
            "digit": digit.ravel().tolist(),
        }


class DemoHandler(BaseHTTPRequestHandler):
    server: DigitServer
    server_version = "mnist-study-demo"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/model":
            trained = self.server.trained
            self.send_json(HTTPStatus.OK, {"network": trained.network, "checkpoint": trained.path.name})
            return
        page = self.server.pages.get("/index.html" if path == "/" else path)
        if page is None:
            self.send_json(HTTPStatus.NOT_FOUND, {"error": f"{path} is not a page of this demo"})
            return
        body = page.read_bytes()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", CONTENT_TYPES.get(page.name[page.name.rfind(".") :], "text/plain"))
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        if self.path != "/predict":
            self.send_json(HTTPStatus.NOT_FOUND, {"error": f"POST {self.path}: only /predict takes a drawing"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_UPLOAD:
            self.send_json(HTTPStatus.BAD_REQUEST, {"error": f"send the drawing as a PNG of 1 to {MAX_UPLOAD} bytes"})
            return
        try:
            answer = self.server.predict(self.rfile.read(length))
        except ImageProblem as err:
            self.send_json(HTTPStatus.UNPROCESSABLE_ENTITY, {"error": str(err)})
            return
        self.send_json(HTTPStatus.OK, answer)

    def send_json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def start_server(trained: TrainedModel, host: str, port: int) -> DigitServer:
    try:
        return DigitServer((host, port), trained)
    except OSError as err:
        raise UserError(
            f"cannot serve on host={host} port={port}: {err.strerror or err}; pass another port= (0: any free one)"
        ) from None


def serve(cfg: DictConfig) -> None:
    check_values(cfg, ServeConfig, "")
    trained = load_trained(cfg.ckpt_path)
    server = start_server(trained, cfg.host, cfg.port)
    print(f"serving {trained.network} ({trained.path}) at {server.url}: open it in a browser; Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, Terminated):  # how a server is meant to stop: not a failure to record
        log.info("stopped")
    finally:
        server.server_close()
