"""What the tested checkpoint gets wrong: the confusion matrix, per-class accuracy and the test images it
misclassifies most confidently, as TensorBoard images, PNGs in the run folder and numbers for result.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from mnist_study.data.datamodule import MEAN, STD
from mnist_study.models.backbones import NUM_CLASSES
from mnist_study.runs.artifacts import CONFUSION, MISTAKES
from mnist_study.training.tensorboard import rank_zero_writer


class ErrorAnalysis(L.Callback):
    """Needs `test_step` to return the batch's logits. `split` names what the test loop reads, in the figures' titles
    (eval.py tests the validation split too)."""

    def __init__(self, num_images: int = 24, split: str = "test") -> None:
        self.num_images, self.split = num_images, split
        self.confusion_matrix: list[list[int]] | None = None
        self.per_class_acc: list[float] | None = None

    def on_test_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.confusion = MulticlassConfusionMatrix(num_classes=NUM_CLASSES).to(module.device)
        self.worst: tuple[Tensor, Tensor, Tensor, Tensor] | None = None  # confidence, image, label, prediction

    def on_test_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, *_: int
    ) -> None:
        images, labels = batch
        logits = outputs.float()
        self.confusion.update(logits, labels)
        confidence, predicted = logits.softmax(1).max(1)
        wrong = predicted != labels
        candidates = (confidence[wrong], images[wrong], labels[wrong], predicted[wrong])
        if self.worst is not None:
            candidates = tuple(torch.cat(pair) for pair in zip(self.worst, candidates, strict=True))  # type: ignore[assignment]
        top = candidates[0].topk(min(self.num_images, len(candidates[0]))).indices
        self.worst = tuple(c[top] for c in candidates)  # type: ignore[assignment]

    def on_test_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        matrix = self.confusion.compute().cpu()  # summed over ranks by torchmetrics
        self.confusion_matrix = matrix.tolist()
        self.per_class_acc = (matrix.diag() / matrix.sum(1).clamp(min=1)).tolist()
        if not trainer.is_global_zero:
            return
        import matplotlib.pyplot as plt  # figures are made with the Agg backend (confusion_figure)

        figures = {
            CONFUSION: confusion_figure(matrix, self.split),
            MISTAKES: mistakes_figure(*self.worst_on_cpu(), split=self.split),
        }
        writer = rank_zero_writer(trainer)
        run_dir = Path(trainer.default_root_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        for name, figure in figures.items():
            figure.savefig(run_dir / f"{name}.png", dpi=90)
            if writer is not None:  # beside the tested checkpoint's numbers (callbacks.HParams), at the last epoch
                writer.add_figure(f"val_best/{name}", figure, global_step=max(trainer.current_epoch, 1))
            else:
                plt.close(figure)

    def worst_on_cpu(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if self.worst is None:
            return torch.zeros(0), torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long), torch.zeros(0)
        return tuple(t.float().cpu() if t.is_floating_point() else t.cpu() for t in self.worst)  # type: ignore[return-value]


def confusion_figure(matrix: Tensor, split: str = "test") -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = matrix / matrix.sum(1, keepdim=True).clamp(min=1)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for true in range(NUM_CLASSES):
        for predicted in range(NUM_CLASSES):
            if count := int(matrix[true, predicted]):
                color = "white" if rates[true, predicted] > 0.5 else "black"
                ax.text(predicted, true, count, ha="center", va="center", fontsize=7, color=color)
    ax.set(xlabel="predicted", ylabel="true", xticks=range(NUM_CLASSES), yticks=range(NUM_CLASSES))
    ax.set_title(f"{split.capitalize()} set: {int(matrix.diag().sum())} of {int(matrix.sum())} right")
    fig.tight_layout()
    return fig


def mistakes_figure(confidence: Tensor, images: Tensor, labels: Tensor, predicted: Tensor, split: str = "test") -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 8
    rows = max(1, -(-len(labels) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.2, rows * 1.45), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(labels):
            ax.imshow(images[i, 0] * STD + MEAN, cmap="gray_r", vmin=0, vmax=1)
            ax.set_title(f"{int(labels[i])}→{int(predicted[i])} {percent_text(float(confidence[i]))}", fontsize=8)
    title = f"Most confident mistakes on the {split} set, most confident first: true→predicted, confidence"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def percent_text(probability: float, most_decimals: int = 5) -> str:
    """A confidence with as many decimals as it takes not to round to 100 %: 97.3%, 99.97%, 99.9994% (float32
    resolves about 7 significant digits)."""
    for decimals in range(1, most_decimals + 1):
        text = f"{100 * probability:.{decimals}f}"
        if float(text) < 100:
            return f"{text}%"
    return f">{100 - 10**-most_decimals:.{most_decimals}f}%" if probability < 1 else "100%"
