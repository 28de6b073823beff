"""What a run logged to TensorBoard, read back with TensorBoard's own reader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_study.models.classifier import MNISTClassifier
from mnist_study.training.pipeline import build_datamodule


def scalars(run_dir: Path) -> dict[str, list[float]]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def assert_logged_metrics_are_the_checkpoints(run_dir: Path, cfg: DictConfig, split: str = "val") -> None:
    """The last epoch's <tag>/acc and <tag>/loss are those of last.ckpt over the whole split (val, or test as
    test_epoch/)."""
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    images, labels = datamodule.splits[split]
    model = MNISTClassifier.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt").eval()
    with torch.no_grad():
        logits = model(images)
    logged, tag = scalars(run_dir), "val" if split == "val" else "test_epoch"
    assert logged[f"{tag}/acc"][-1] == pytest.approx((logits.argmax(1) == labels).float().mean().item(), abs=1e-6)
    assert logged[f"{tag}/loss"][-1] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
