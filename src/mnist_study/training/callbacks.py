"""The run's Lightning callbacks besides TensorBoard's views (training.tensorboard): timing, the learning rate, the
divergence guard, per-epoch seeding, the per-epoch line, the progress bar and the best checkpoint's name.
conf/callbacks/ lists which ones a run gets.

Everything a person reads counts epochs from 1, as the per-epoch line does: TensorBoard's x-axis (the `step` the
module logs), the checkpoint names, the progress bar, the messages and the report."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.trainer.states import TrainerFn

from mnist_study.errors import UserError
from mnist_study.runs.artifacts import EPOCH_SECONDS, IMAGES_PER_SECOND

log = logging.getLogger(__name__)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def validating_within_fit(trainer: L.Trainer) -> bool:
    """The validation of a fit's epoch (or part of one), not the sanity check or trainer.validate(). During it,
    `trainer.training` is False: Lightning switches the stage to validating."""
    return trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking


class EpochTimer(L.Callback):
    """Logs `train/epoch_s` (the seconds of an epoch: training + validation) and `train/images_per_s` (training
    only) per epoch."""

    def __init__(self) -> None:
        self.epoch_seconds: list[float] = []
        self._start = self._validation_start = self._validation_seconds = 0.0
        self._images = 0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.on_train_epoch_start(trainer, module)  # a run resumed mid-epoch starts there, without that hook

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        synchronize(module.device)
        self._start, self._validation_seconds, self._images = time.perf_counter(), 0.0, 0

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, _: int
    ) -> None:
        self._images += len(batch[1])

    def on_validation_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if validating_within_fit(trainer):
            synchronize(module.device)
            self._validation_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if validating_within_fit(trainer):  # once or more an epoch (trainer.val_check_interval), or not at all
            synchronize(module.device)
            self._validation_seconds += time.perf_counter() - self._validation_start

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        synchronize(module.device)  # in Lightning 2, on_train_epoch_end runs after the epoch's validation
        self.epoch_seconds.append(time.perf_counter() - self._start)
        train_seconds = self.epoch_seconds[-1] - self._validation_seconds
        module.log(EPOCH_SECONDS, self.epoch_seconds[-1], sync_dist=True)
        module.log(IMAGES_PER_SECOND, self._images * trainer.world_size / max(train_seconds, 1e-9), sync_dist=True)


class DivergenceError(UserError):
    pass


EXPLODED_LOSS = 100 * math.log(10)  # 100x the cross-entropy of guessing among 10 classes
EXPLODED = "train/exploded"  # 1.0 once an epoch's mean loss went over EXPLODED_LOSS (not written to TensorBoard)


class DivergenceGuard(L.Callback):
    """Stops a run whose training loss became non-finite, before that epoch's validation, so no checkpoint
    of the diverged model is written. A loss that stays finite but explodes (an epoch's mean above
    EXPLODED_LOSS) is warned about once and recorded in `exploded_epochs`; result.json says "exploded".

    It reads the epoch's running mean loss from the module (MNISTClassifier.epoch_training_loss) at the epoch's
    end only: a sum is non-finite as soon as one of its terms is, so no step needs a hook or a device sync."""

    def __init__(self, lr: float) -> None:
        self.lr = lr  # the configured peak rate, for the advice in the messages
        self.exploded_epochs: list[int] = []

    @property
    def exploded(self) -> bool:
        return bool(self.exploded_epochs)

    def state_dict(self) -> dict[str, Any]:  # kept in the checkpoint: a resumed run still knows
        return {"exploded_epochs": list(self.exploded_epochs)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.exploded_epochs = list(state_dict.get("exploded_epochs", []))

    def on_validation_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if validating_within_fit(trainer):  # a checkpoint may be saved when this validation ends
            self.check(trainer, module)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        mean = self.check(trainer, module)
        if mean > EXPLODED_LOSS and trainer.current_epoch not in self.exploded_epochs:
            if not self.exploded_epochs:
                log.warning(
                    "the training loss exploded at epoch %d: mean %.3g, over 100x chance level (ln 10 = 2.30); the "
                    "run goes on but its result is not trustworthy (result.json: exploded); lower the learning rate "
                    "(now optimizer.lr=%g, try optimizer.lr=%g)",
                    trainer.current_epoch + 1,
                    mean,
                    self.lr,
                    self.lr / 10,
                )
            self.exploded_epochs.append(trainer.current_epoch)
        # For result.json, through callback_metrics: they come back from ddp_spawn's processes, and any rank counts.
        module.log(EXPLODED, float(self.exploded), logger=False, sync_dist=True, reduce_fx="max")

    def check(self, trainer: L.Trainer, module: L.LightningModule) -> float:
        """The epoch's mean training loss so far; DivergenceError if it is not finite."""
        mean = float(module.epoch_training_loss())
        if not math.isfinite(mean):
            raise DivergenceError(
                f"the training loss became non-finite at epoch {trainer.current_epoch + 1}: the run diverged; lower "
                f"the learning rate (now optimizer.lr={self.lr:g}, try optimizer.lr={self.lr / 10:g})"
            )
        return mean


class EpochSeed(L.Callback):
    """Seeds torch from (seed, epoch, rank) at every epoch start: dropout masks then depend on nothing that
    ran before, so a resumed run goes on exactly as an uninterrupted one would."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        torch.manual_seed(self.seed * 100_003 + trainer.current_epoch * 101 + trainer.global_rank)


class AfterEachEpoch(L.Callback):
    """Calls `epoch_done(trainer, module, epoch)` on the logging rank once an epoch's metrics are all logged: when
    the next epoch starts, training ends or stops. (Lightning runs a callback's on_train_epoch_end before the
    module's, which logs the training metrics.)"""

    def __init__(self) -> None:
        self._finished: int | None = None

    def epoch_done(self, trainer: L.Trainer, module: L.LightningModule, epoch: int) -> None:
        raise NotImplementedError

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._finished = trainer.current_epoch

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._flush(trainer, module)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._flush(trainer, module)

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        self._flush(trainer, module)  # a stopped run keeps its last finished epoch, which a resume does not redo

    def _flush(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        epoch, self._finished = self._finished, None
        if epoch is not None and trainer.is_global_zero:
            self.epoch_done(trainer, module, epoch)


class EpochSummary(AfterEachEpoch):
    """One line per finished epoch in the log (and so on the screen), epochs counted from 1:
    `epoch 7/30  train loss 0.0213 acc 0.9934  val loss 0.0302 acc 0.9912  12.8 s`."""

    def epoch_done(self, trainer: L.Trainer, module: L.LightningModule, epoch: int) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        parts = [f"epoch {epoch + 1}/{trainer.max_epochs}"]
        for stage in ("train", "val"):
            if f"{stage}/loss" in metrics:
                loss = loss_text(metrics[f"{stage}/loss"])
                parts.append(f"{stage} loss {loss} acc {metrics[f'{stage}/acc']:.4f}")
        if EPOCH_SECONDS in metrics:
            parts.append(f"{metrics[EPOCH_SECONDS]:.1f} s")
        log.info("  ".join(parts))


def loss_text(loss: float) -> str:
    """0.0213, and 3.2e-05 where four decimals would print a loss near zero as 0.0000."""
    return f"{loss:.4f}" if loss >= 0.01 or loss == 0 else f"{loss:.3g}"


LEARNING_RATE = "train/lr"


class EpochLearningRate(L.Callback):
    """Logs `train/lr`, the rate the optimizer holds at the end of each epoch (under one-cycle or cosine, the
    schedule's value after the epoch's last step), with the epoch as x-axis like every other train/ chart. Once
    an epoch: no per-step hook, and TensorBoard's train/ group keeps one x-axis."""

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.optimizers:
            module.log(LEARNING_RATE, float(trainer.optimizers[0].param_groups[0]["lr"]), sync_dist=True)


class EpochProgressBar(TQDMProgressBar):
    """Lightning's progress bar, its epoch counted from 1 and out of the total, as in the per-epoch line:
    `Epoch 3/30`."""

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")


class EpochCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose `{epoch}` in `filename` counts from 1 (best-epoch07.ckpt holds the model after the
    line `epoch 7/30`). Only the name changes: the checkpoint's own "epoch" stays Lightning's."""

    def format_checkpoint_name(
        self, metrics: dict[str, Any], filename: str | None = None, ver: int | None = None, prefix: str | None = None
    ) -> str:
        if "epoch" in metrics:
            metrics = {**metrics, "epoch": metrics["epoch"] + 1}
        return super().format_checkpoint_name(metrics, filename, ver, prefix)
