"""A small MNIST-like set whose classes are shapes: the digits 0-9 drawn in Pillow's own font, each in another
size, stroke width and slant, then framed as MNIST's digits are (longer side 20 of 28 pixels, centre of mass at
(14, 14)) - here at 4 x 28 pixels and averaged down, not with inference.images' code. conftest.py's synthetic
digits tell their classes apart by where a block lies, which cropping to the ink removes; these keep their class
wherever they are drawn, so a network trained on them can be asked about resized, inverted, re-drawn copies.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from mnist_study.data import mnist_files

SCALE = 4  # drawn at 4 x 28 pixels, then averaged down
TRAIN_SIZE, TEST_SIZE, VAL_SIZE = 1200, 300, 200


def glyph_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count).astype(np.uint8)
    images = np.empty((count, 28, 28), dtype=np.uint8)
    side = 28 * SCALE
    for i, label in enumerate(labels):
        font = ImageFont.load_default(size=int(rng.integers(80, 110)))
        canvas = Image.new("L", (2 * side, 2 * side), 0)
        draw = ImageDraw.Draw(canvas)
        draw.text(
            (side, side),
            str(label),
            fill=255,
            font=font,
            anchor="mm",
            stroke_width=int(rng.integers(2, 8)),
            stroke_fill=255,
        )
        turned = canvas.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BILINEAR)
        # within half a pixel of the centre, as MNIST's centres of mass are after its whole-pixel shifts
        images[i] = mnist_frame(turned, shift=rng.uniform(-0.5, 0.5, 2))
    return images, labels


def mnist_frame(drawn: Image.Image, shift: np.ndarray) -> np.ndarray:
    """A drawn digit (light on black) framed as MNIST's: its box scaled to a longer side of 20 / 28 of the field,
    its centre of mass at the field's centre (14, 14) plus `shift` (rows, columns; 28-pixel units), averaged down
    to 28 x 28. A pixel (i, j) of the large field has its centre at ((i + 0.5) / SCALE - 0.5, ...) in the small."""
    left, top, right, bottom = drawn.getbbox()
    box = drawn.crop((left, top, right, bottom))
    scale = 20 * SCALE / max(box.size)
    box = box.resize((max(1, round(box.width * scale)), max(1, round(box.height * scale))), Image.Resampling.BILINEAR)
    row, column = ndimage.center_of_mass(np.asarray(box, dtype=np.float64))
    field = Image.new("L", (28 * SCALE, 28 * SCALE), 0)
    target_row, target_column = (14 + shift + 0.5) * SCALE - 0.5
    field.paste(box, (round(target_column - column), round(target_row - row)))
    return np.asarray(field.resize((28, 28), Image.Resampling.BOX))


def write_glyph_mnist(data_dir: Path) -> dict[str, str]:
    """The four IDX files of the glyph set in data_dir/MNIST/raw; returns their MD5s (for data.checksums)."""
    directory = mnist_files.raw_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    train_x, train_y = glyph_digits(TRAIN_SIZE, seed=11)
    test_x, test_y = glyph_digits(TEST_SIZE, seed=12)
    arrays = {"train_images": train_x, "train_labels": train_y, "test_images": test_x, "test_labels": test_y}
    checksums = {}
    for key, array in arrays.items():
        data = mnist_files.encode_idx(array)
        (directory / mnist_files.FILES[key]).write_bytes(data)
        checksums[key] = hashlib.md5(data).hexdigest()
    return checksums
