"""The study's per-epoch numbers: mean cross-entropy and accuracy, as one torchmetrics Metric."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from mnist_study.models.attributes import FastPlainAttributes


class LossAndAccuracy(FastPlainAttributes, Metric):
    """Mean cross-entropy and accuracy of one stage, kept as three running sums (summed across ranks).

    Three in-place additions a step: torchmetrics' MulticlassAccuracy plus MeanMetric cost a large share of a
    softmax-regression step on the CPU (docs/PERFORMANCE.md).
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("loss_sum", torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("correct", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, labels: Tensor, mean_loss: Tensor) -> None:  # torchmetrics: under no_grad
        self.loss_sum.add_(mean_loss, alpha=labels.numel())
        self.correct.add_((logits.argmax(1) == labels).sum())
        self.count.add_(labels.numel())

    def compute(self) -> dict[str, Tensor]:
        return {"acc": self.correct / self.count, "loss": self.loss_sum / self.count}
