"""The glyph run (conftest's glyph_run): its best checkpoint, its test set and the network's answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mnist_study.data import mnist_files
from mnist_study.data.datamodule import normalize
from mnist_study.inference.checkpoints import load_trained


def best_checkpoint(run: Path) -> Path:
    [best] = (run / "checkpoints").glob("best-epoch*.ckpt")
    return best


def diverged_checkpoint(run: Path, path: Path) -> Path:
    """The run's best checkpoint with every floating-point weight NaN, as a diverged network leaves it."""
    checkpoint = torch.load(best_checkpoint(run), weights_only=True)
    for name, tensor in checkpoint["state_dict"].items():
        if tensor.is_floating_point():
            checkpoint["state_dict"][name] = torch.full_like(tensor, float("nan"))
    torch.save(checkpoint, path)
    return path


def glyph_test_set(run: Path) -> tuple[np.ndarray, np.ndarray]:
    return mnist_files.load_split(mnist_files.raw_dir(run.parent / "data"), train=False)


def network_predictions(run: Path, digits: np.ndarray) -> np.ndarray:
    classifier = load_trained(best_checkpoint(run)).classifier
    with torch.inference_mode():
        return classifier(normalize(torch.from_numpy(digits.copy()))).argmax(1).numpy()
