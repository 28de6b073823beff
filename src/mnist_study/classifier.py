"""One LightningModule for every backbone: cross-entropy, epoch-level metrics, timing, optimizer by name."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from mnist_study.backbones import NUM_CLASSES, build_backbone, parameter_count
from mnist_study.errors import UserError

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}
SCHEDULERS = ("none", "onecycle", "cosine")
STAGES = ("train", "val", "test", "test_epoch")  # test_epoch: test set each epoch, for plots only


class DivergenceError(UserError):
    pass


def comparison_layout(models: tuple[str, ...], regularizers: tuple[str, ...]) -> dict:
    """TensorBoard custom-scalars layout: one chart per model (its regularizers) and per regularizer."""

    def charts(kind: str, names: tuple[str, ...], metric: str) -> dict:
        return {f"{name}: val {metric}": ["Multiline", [f"^by_{kind}/{name}/val_{metric}$"]] for name in names}

    return {
        "Per model: accuracy": charts("model", models, "acc"),
        "Per model: loss": charts("model", models, "loss"),
        "Per regularizer: accuracy": charts("regularizer", regularizers, "acc"),
        "Per regularizer: loss": charts("regularizer", regularizers, "loss"),
    }


class MNISTClassifier(L.LightningModule):
    def __init__(
        self,
        model: Mapping[str, Any],
        regularizer: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        # Speed switches, not part of what the model is: kept out of the hyperparameters.
        self.channels_last, self.compile_net = channels_last, compile
        scheduler = dict(scheduler or {"name": "none"})
        if optimizer["name"] not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer['name']!r}: choose one of {', '.join(OPTIMIZERS)}")
        if not optimizer["lr"] > 0:
            raise ValueError(f"optimizer.lr must be > 0, got {optimizer['lr']}")
        if scheduler["name"] not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {scheduler['name']!r}: choose one of {', '.join(SCHEDULERS)}")
        # Plain dicts only, so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(
            {
                "model": dict(model),
                "regularizer": dict(regularizer),
                "optimizer": dict(optimizer),
                "scheduler": scheduler,
            },
            logger=False,
        )
        self.net = build_backbone(model, regularizer)
        self.num_parameters = parameter_count(self.net)
        self.example_input_array = torch.zeros(2, 1, 28, 28)  # for logger.log_graph and the model summary
        self.metrics = nn.ModuleDict()
        for stage in STAGES:
            self.metrics[f"{stage}_acc"] = MulticlassAccuracy(NUM_CLASSES, average="micro", validate_args=False)
            # nan_strategy="disable": the default checks every update for NaN, a device sync per step.
            self.metrics[f"{stage}_loss"] = MeanMetric(nan_strategy="disable")
        self._first_bad_step: Tensor | None = None
        self._epoch_start = self._train_end = 0.0
        self._train_images = 0

    def configure_model(self) -> None:
        if self.channels_last:  # 1-channel inputs are already NHWC in memory: only the weights change
            self.net.to(memory_format=torch.channels_last)
        if self.compile_net:
            self.net.compile()  # in place: the state_dict keys stay those of the plain module

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def _step(self, stage: str, batch: tuple[Tensor, Tensor]) -> Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        self.metrics[f"{stage}_acc"].update(logits.detach(), labels)
        self.metrics[f"{stage}_loss"].update(loss.detach(), weight=labels.numel())
        return loss

    def _log_epoch(self, stage: str) -> None:
        # Tags read "train/acc", "val/loss", ...; the per-epoch test curves go under "test_epoch/".
        for name in ("acc", "loss"):
            metric = self.metrics[f"{stage}_{name}"]
            value = metric.compute()
            # torchmetrics already synced the value across ranks; sync_dist only quiets Lightning's warning
            self.log(f"{stage}/{name}", value, add_dataloader_idx=False, sync_dist=True)
            if stage == "val":  # the same value under tags that only runs of one model (regularizer) have
                self.log(f"by_model/{self.hparams['model']['name']}/val_{name}", value, sync_dist=True)
                self.log(f"by_regularizer/{self.hparams['regularizer']['name']}/val_{name}", value, sync_dist=True)
            metric.reset()

    # --- training ------------------------------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        self._synchronize()
        self._epoch_start = time.perf_counter()
        self._train_images = 0
        self._first_bad_step = None

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._step("train", batch)
        self._train_images += batch[1].shape[0]
        self._track_divergence(loss)
        return loss

    def _track_divergence(self, loss: Tensor) -> None:
        if loss.device.type == "cpu":  # reading a CPU scalar costs nothing
            if self._first_bad_step is None and not math.isfinite(loss.item()):
                self._first_bad_step = torch.tensor(float(self.global_step))
            return
        # On a GPU, reading the loss would wait for the step: keep the first bad step on the device instead.
        bad = torch.where(torch.isfinite(loss), math.inf, float(self.global_step))
        self._first_bad_step = bad if self._first_bad_step is None else torch.minimum(self._first_bad_step, bad)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        images, labels = batch
        if images.device == device:  # the data module keeps the tensors on the device: nothing to move
            return batch
        return images.to(device), labels.to(device)

    def _check_divergence(self) -> None:
        if self._first_bad_step is None or not math.isfinite(step := float(self._first_bad_step)):
            return
        lr = self.hparams["optimizer"]["lr"]
        raise DivergenceError(
            f"the training loss became non-finite at epoch {self.current_epoch}, step {int(step)}: "
            f"the run diverged; lower the learning rate (now optimizer.lr={lr:g}, try optimizer.lr={lr / 10:g})"
        )

    def on_validation_epoch_start(self) -> None:
        if self.trainer.sanity_checking or not self.trainer.training:
            return
        self._check_divergence()  # before validation, so no checkpoint of a diverged model is written
        self._synchronize()
        self._train_end = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        self._check_divergence()
        self._synchronize()
        now = time.perf_counter()
        train_seconds = (self._train_end or now) - self._epoch_start
        self._log_epoch("train")
        self.log("time/epoch_s", now - self._epoch_start, sync_dist=True)
        images_per_s = self._train_images * self.trainer.world_size / max(train_seconds, 1e-9)
        self.log("time/train_images_per_s", images_per_s, sync_dist=True)
        self._train_end = 0.0

    # --- evaluation ----------------------------------------------------------------------------------

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._step("val" if dataloader_idx == 0 else "test_epoch", batch)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            for name in ("val_acc", "val_loss", "test_epoch_acc", "test_epoch_loss"):
                self.metrics[name].reset()
            return
        self._log_epoch("val")
        if self.metrics["test_epoch_acc"].update_count:
            self._log_epoch("test_epoch")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    # --- optimization --------------------------------------------------------------------------------

    def make_optimizer(
        self, total_steps: int
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
        """The configured optimizer and its per-step schedule (None for a constant rate)."""
        options = dict(self.hparams["optimizer"])
        optimizer = OPTIMIZERS[options.pop("name")](self.parameters(), **options)
        schedule = dict(self.hparams["scheduler"])
        name = schedule.pop("name")
        if name == "onecycle":
            return optimizer, torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=options["lr"], total_steps=total_steps, **schedule
            )
        if name == "cosine":
            return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, **schedule)
        return optimizer, None

    def configure_optimizers(self) -> Any:
        optimizer, scheduler = self.make_optimizer(int(self.trainer.estimated_stepping_batches))
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
