"""`python predict.py ckpt_path=... images=<file, folder or glob>`: each image's class and top-k probabilities,
as a table on the terminal and a CSV. Images are prepared as MNIST's digits were (inference.images); an image
that cannot be read as a digit is one line on stderr and a row of the CSV saying why, and the others are still
predicted. The exit code is 1 when any image could not be predicted."""

from __future__ import annotations

import csv
import glob
import io
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from mnist_study.atomic_files import write_atomically
from mnist_study.errors import UserError
from mnist_study.inference.checkpoints import load_trained
from mnist_study.inference.config import PredictConfig, check_output_file, check_values
from mnist_study.inference.images import ImageProblem, as_batch, prepare_file
from mnist_study.models.classifier import MNISTClassifier

log = logging.getLogger(__name__)
CSV_FILE = "predictions.csv"
ADVICE = "Free space there, or pass csv=<a path on another disk>"


@dataclass(frozen=True)
class Prediction:
    path: Path
    probabilities: np.ndarray | None  # 10 class probabilities, or None when the image could not be read
    problem: str = ""

    def top(self, k: int) -> list[tuple[int, float]]:
        assert self.probabilities is not None
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(int(c), float(self.probabilities[c])) for c in order]


def image_paths(images: str) -> list[Path]:
    """A file, every file in a folder and its subfolders (hidden ones left out), or a glob's matches, sorted."""
    given = Path(images).expanduser()
    if given.is_file():
        return [given]
    if given.is_dir():
        found = [p for p in given.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.parts)]
        if not found:
            raise UserError(f"images={images} is an empty folder: put image files in it, or pass a file or a glob")
        return sorted(found)
    if glob.has_magic(images):
        matches = sorted(Path(p) for p in glob.glob(str(given), recursive=True) if Path(p).is_file())
        if not matches:
            raise UserError(f"images={images} matches no file: pass an image file, a folder of images or a glob")
        return matches
    raise UserError(f"images={images} does not exist: pass an image file, a folder of images or a glob")


def predict_digits(classifier: MNISTClassifier, digits: list[np.ndarray], batch_size: int) -> np.ndarray:
    """Class probabilities (N, 10) of MNIST-style uint8 digits."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(digits), batch_size):
            out.append(classifier(as_batch(digits[start : start + batch_size])).float().softmax(1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 10), dtype=np.float32)


def predict_paths(classifier: MNISTClassifier, paths: list[Path], batch_size: int) -> list[Prediction]:
    digits, readable, problems = [], [], {}
    for path in paths:
        try:
            digits.append(prepare_file(path))
            readable.append(path)
        except ImageProblem as err:
            problems[path] = str(err)
    probabilities = dict(zip(readable, predict_digits(classifier, digits, batch_size), strict=True))
    return [Prediction(p, probabilities.get(p), problems.get(p, "")) for p in paths]


def table(predictions: list[Prediction], top_k: int) -> str:
    """The terminal's table: one row per predicted image, its class and top-k probabilities."""
    shown = [p for p in predictions if p.probabilities is not None]
    if not shown:
        return ""
    width = max(len("image"), *(len(str(p.path)) for p in shown))
    header = f"{'image':<{width}}  class  " + "  ".join(f"{f'top {i + 1}':>9}" for i in range(top_k))
    rows = [header, "-" * len(header)]
    for p in shown:
        ranked = p.top(top_k)
        cells = "  ".join(f"{c}{probability:>8.2%}" for c, probability in ranked)
        rows.append(f"{p.path!s:<{width}}  {ranked[0][0]:>5}  {cells}")
    return "\n".join(rows)


def csv_bytes(predictions: list[Prediction], top_k: int) -> bytes:
    """image, class, then (class, probability) for each of the top k, then all 10 probabilities, then the problem."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    ranks = [f"{name}{i + 1}" for i in range(top_k) for name in ("top", "p")]
    writer.writerow(["image", "class", *ranks, *(f"p_{c}" for c in range(10)), "problem"])
    for p in predictions:
        if p.probabilities is None:
            writer.writerow([p.path, "", *[""] * (2 * top_k), *[""] * 10, p.problem])
            continue
        ranked = p.top(top_k)
        cells = [value for c, probability in ranked for value in (c, f"{probability:.6f}")]
        writer.writerow([p.path, ranked[0][0], *cells, *(f"{v:.6f}" for v in p.probabilities), ""])
    return text.getvalue().encode()


def predict(cfg: DictConfig) -> dict[str, Any]:
    check_values(cfg, PredictConfig, "")
    if cfg.csv is not None:
        check_output_file("csv", cfg.csv, (".csv",), cfg.ckpt_path)
    paths = image_paths(cfg.images)
    trained = load_trained(cfg.ckpt_path)
    predictions = predict_paths(trained.classifier, paths, cfg.batch_size)
    csv_path = Path(cfg.csv) if cfg.csv is not None else Path(cfg.output_dir) / CSV_FILE
    write_atomically(csv_path, csv_bytes(predictions, cfg.top_k), ADVICE)
    if shown := table(predictions, cfg.top_k):
        print(shown)
    failed = [p for p in predictions if p.probabilities is None]
    for p in failed:
        print(f"skipped: {p.problem}", file=sys.stderr)
    print(f"{len(predictions) - len(failed)} of {len(predictions)} images predicted by {trained.network}: {csv_path}")
    if failed:
        raise UserError(
            f"{len(failed)} of {len(predictions)} images could not be predicted (listed above; {csv_path} says why)"
        )
    return {"csv": str(csv_path), "predicted": len(predictions) - len(failed), "failed": len(failed)}
