"""Images as MNIST's digits were made (LeCun et al., 1998): grayscale, light ink on a dark background, the ink's
bounding box scaled so that its longer side is 20 pixels (aspect kept, anti-aliased), placed in a 28 x 28 field
with its centre of mass at the centre (14, 14), as whole pixels. Then the training data's normalization
(data.datamodule.normalize), so a network sees a user's digit as it saw MNIST's.

What cannot be read as one digit on a plain background is refused with a one-line ImageProblem: an empty or
damaged file, a file that is no image, a blank image, and noise (ink scattered in many specks).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage
from torch import Tensor

from mnist_study.data.datamodule import normalize
from mnist_study.errors import UserError, first_line

FIELD, BOX, CENTRE = 28, 20, 14  # MNIST: 28 x 28 images, the digit's longer side 20, centre of mass at (14, 14)
WHITE = 255.0  # the brightness scale: 8-bit levels, so that inverting an 8-bit image is exact in float arithmetic
MIN_CONTRAST = 0.05 * WHITE  # darkest to lightest: less is a blank image
INK = 0.2  # pixels this far from the background (a fraction of the strongest ink) bound the digit's box
# Noise: a digit's ink lies in a few connected strokes; in noise the 3 largest connected specks hold a small share
# (docs/AFTER-TRAINING.md has the measurements behind the threshold).
STROKES, MIN_STROKE_SHARE, STROKE_INK = 3, 0.5, 0.25
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


class ImageProblem(UserError):
    """An input that is not an image of a digit, in one line: `<path> <what is wrong>`."""


def read_image(data: bytes, name: str) -> Image.Image:
    """The first frame of an image file's `data`, decoded and turned upright (EXIF orientation, as in photos)."""
    if not data:
        raise ImageProblem(f"{name} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except UnidentifiedImageError:
        raise ImageProblem(f"{name} is not an image file that Pillow reads ({what_it_is(data)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageProblem(f"{name} is too large to be one digit: {first_line(err)}") from None
    except (OSError, ValueError, SyntaxError) as err:  # what Pillow raises for damaged or truncated files
        raise ImageProblem(f"{name} is a damaged image: {first_line(err)}") from None
    return ImageOps.exif_transpose(image)


def what_it_is(data: bytes) -> str:
    head = data[:512]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:
            return f"it starts with {head[:8]!r}"
    return "it is a text file"


def grayscale(image: Image.Image) -> np.ndarray:
    """Float64 brightness from 0 to WHITE for any of Pillow's modes: 16-bit and float images by their range,
    colour by its luma (ITU-R 601), and a transparent background filled with the opposite of the ink's shade."""
    if image.mode in SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = values.max(initial=0.0)
        full = 1.0 if image.mode == "F" and top <= 1 else 255.0 if top <= 255 else 65535.0 if top <= 65535 else top
        return np.clip(values * (WHITE / full), 0.0, WHITE)
    if "A" in image.mode or "a" in image.mode or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
        luma, alpha = rgba[..., :3] @ np.array([0.299, 0.587, 0.114]), rgba[..., 3] / 255.0
        if alpha.min() < 1.0:
            ink_shade = (luma * alpha).sum() / max(alpha.sum(), 1e-9)  # the drawing's mean shade
            background = WHITE if ink_shade < WHITE / 2 else 0.0
            return alpha * luma + (1.0 - alpha) * background
        return luma
    return np.asarray(image.convert("L"), dtype=np.float64)


def ink_map(gray: np.ndarray, name: str) -> np.ndarray:
    """Ink as 0 (the background) to 1 (the strongest ink), whichever of light or dark the background is; the
    background is the median of the image's outer rim."""
    darkest, lightest = float(gray.min()), float(gray.max())
    if lightest - darkest < MIN_CONTRAST:
        raise ImageProblem(f"{name} is blank: one shade throughout, no digit to read")
    rim = max(1, round(0.02 * min(gray.shape)))
    border = np.concatenate([gray[:rim].ravel(), gray[-rim:].ravel(), gray[:, :rim].ravel(), gray[:, -rim:].ravel()])
    background = float(np.median(border))
    ink = background - gray if background > (darkest + lightest) / 2 else gray - background
    strongest = float(ink.max())
    if strongest < MIN_CONTRAST:
        raise ImageProblem(f"{name} is blank: nothing stands out from its background")
    return np.clip(ink / strongest, 0.0, 1.0)


def check_strokes(ink: np.ndarray, name: str) -> None:
    """Refuse noise: the ink must lie mostly in a few connected strokes, at the image's own resolution (scaled
    down, noise averages into blobs that look like strokes)."""
    mask = ink > STROKE_INK
    labels, count = ndimage.label(mask)
    sizes = np.sort(np.bincount(labels.ravel())[1:])[::-1]
    share = sizes[:STROKES].sum() / max(int(mask.sum()), 1)
    if share < MIN_STROKE_SHARE:
        raise ImageProblem(
            f"{name} does not look like a digit on a plain background: its ink is scattered in {count} specks "
            f"(the {STROKES} largest hold {share:.0%} of it), as in noise"
        )


def resized(ink: np.ndarray, scale: float) -> np.ndarray:
    """`ink` scaled by `scale` (each side at least one pixel), anti-aliased: Pillow's LANCZOS on float pixels."""
    height, width = ink.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = Image.fromarray(ink.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS)
    return np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)


def mnist_style(gray: np.ndarray, name: str) -> np.ndarray:
    """A grayscale image (floats from 0 to WHITE) as an MNIST digit: uint8, 28 x 28, ink bright on black."""
    ink = ink_map(gray, name)
    check_strokes(ink, name)
    rows, columns = np.nonzero(ink >= INK)
    box = ink[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
    digit = resized(box, BOX / max(box.shape))
    centre = np.array(ndimage.center_of_mass(digit)) if digit.sum() > 0 else (np.array(digit.shape) - 1) / 2
    top, left = np.round(CENTRE - centre).astype(int)
    field = np.zeros((FIELD + 2 * BOX, FIELD + 2 * BOX))  # room for any shift; the part outside the field is cut
    field[BOX + top : BOX + top + digit.shape[0], BOX + left : BOX + left + digit.shape[1]] = digit
    return np.round(field[BOX : BOX + FIELD, BOX : BOX + FIELD] * 255).astype(np.uint8)


def prepare(data: bytes, name: str) -> np.ndarray:
    """An image file's bytes as an MNIST digit (uint8, 28 x 28); ImageProblem in one line when it is none."""
    return mnist_style(grayscale(read_image(data, name)), name)


def prepare_file(path: Path) -> np.ndarray:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageProblem(f"{path} cannot be read: {err.strerror or first_line(err)}") from None
    return prepare(data, str(path))


def as_batch(digits: list[np.ndarray]) -> Tensor:
    """MNIST-style uint8 digits as the network's input: (N, 1, 28, 28), normalized as the training data."""
    return normalize(torch.from_numpy(np.stack(digits)) if digits else torch.zeros(0, FIELD, FIELD, dtype=torch.uint8))
