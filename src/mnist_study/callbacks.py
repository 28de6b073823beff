"""The run's Lightning callbacks besides the checkpoints: timing, the divergence guard, per-epoch seeding and
the study's TensorBoard comparison layout. conf/callbacks/ lists which ones a run gets."""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch
from torch import Tensor

from mnist_study.errors import UserError


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EpochTimer(L.Callback):
    """Logs `time/epoch_s` (training + validation) and `time/train_images_per_s` (training only) per epoch."""

    def __init__(self) -> None:
        self.epoch_seconds: list[float] = []
        self._start = self._train_end = 0.0
        self._images = 0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        synchronize(module.device)
        self._start, self._train_end, self._images = time.perf_counter(), 0.0, 0

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, _: int
    ) -> None:
        self._images += len(batch[1])

    def on_validation_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.training and not trainer.sanity_checking:
            synchronize(module.device)
            self._train_end = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        synchronize(module.device)  # in Lightning 2, on_train_epoch_end runs after the epoch's validation
        now = time.perf_counter()
        self.epoch_seconds.append(now - self._start)
        train_seconds = (self._train_end or now) - self._start
        module.log("time/epoch_s", self.epoch_seconds[-1], sync_dist=True)
        module.log(
            "time/train_images_per_s", self._images * trainer.world_size / max(train_seconds, 1e-9), sync_dist=True
        )


class DivergenceError(UserError):
    pass


class DivergenceGuard(L.Callback):
    """Stops a run whose training loss became non-finite, before that epoch's validation, so no checkpoint
    of the diverged model is written."""

    def __init__(self) -> None:
        self._first_bad_step: Tensor | float = math.inf

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._first_bad_step = math.inf

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, _: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        step = float(trainer.global_step)
        if loss.device.type == "cpu":  # reading a CPU scalar costs nothing
            if self._first_bad_step == math.inf and not math.isfinite(loss.item()):
                self._first_bad_step = step
        else:  # reading a GPU scalar would wait for the step: keep the first bad step on the device
            bad = torch.where(torch.isfinite(loss), math.inf, step)
            self._first_bad_step = torch.minimum(torch.as_tensor(self._first_bad_step, device=loss.device), bad)

    def on_validation_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.training and not trainer.sanity_checking:
            self.check(trainer, module)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.check(trainer, module)

    def check(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        step = float(self._first_bad_step)
        if math.isfinite(step):
            lr = module.hparams["optimizer"]["lr"]
            raise DivergenceError(
                f"the training loss became non-finite at epoch {trainer.current_epoch}, step {int(step)}: the run "
                f"diverged; lower the learning rate (now optimizer.lr={lr:g}, try optimizer.lr={lr / 10:g})"
            )


class EpochSeed(L.Callback):
    """Seeds torch from (seed, epoch, rank) at every epoch start: dropout masks then depend on nothing that
    ran before, so a resumed run goes on exactly as an uninterrupted one would."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        torch.manual_seed(self.seed * 100_003 + trainer.current_epoch * 101 + trainer.global_rank)


def comparison_layout(model: str, regularizer: str) -> dict:
    """This run's part of TensorBoard's custom-scalars layout: the chart of its model (one line per
    regularizer) and of its regularizer (one line per model). TensorBoard merges the layouts of all runs
    in a log directory, so the page shows charts for exactly the models and regularizers present."""

    def chart(kind: str, name: str, metric: str) -> dict:
        return {f"{name}: val {metric}": ["Multiline", [f"^by_{kind}/{name}/val_{metric}$"]]}

    return {
        "Per model: accuracy": chart("model", model, "acc"),
        "Per model: loss": chart("model", model, "loss"),
        "Per regularizer: accuracy": chart("regularizer", regularizer, "acc"),
        "Per regularizer: loss": chart("regularizer", regularizer, "loss"),
    }


class StudyComparison(L.Callback):
    """The validation metrics again under tags that only runs of one model (one regularizer) have, and the
    custom-scalars layout that draws them: per model its regularizers, per regularizer its models."""

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        writer = getattr(trainer.logger, "experiment", None)
        if trainer.is_global_zero and hasattr(writer, "add_custom_scalars"):
            writer.add_custom_scalars(comparison_layout(*self._names(module)))

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        model, regularizer = self._names(module)
        for metric in ("acc", "loss"):  # validation ran before on_train_epoch_end: its values are in
            if (value := trainer.callback_metrics.get(f"val/{metric}")) is not None:
                module.log(f"by_model/{model}/val_{metric}", value, sync_dist=True)
                module.log(f"by_regularizer/{regularizer}/val_{metric}", value, sync_dist=True)

    @staticmethod
    def _names(module: L.LightningModule) -> tuple[str, str]:
        return module.hparams["model"]["name"], module.hparams["regularizer"]["name"]
