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
from torchmetrics import Metric

from mnist_study.backbones import build_backbone, parameter_count
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


class LossAndAccuracy(Metric):
    """Mean cross-entropy and accuracy of one stage, kept as three running sums (summed across ranks).

    Three in-place additions a step; torchmetrics' MulticlassAccuracy plus MeanMetric took ~0.15 ms a step
    here, a quarter of a softmax-regression step on the CPU.
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
        # Keyed "train_metric", not "train": that name is taken by ModuleDict.train().
        self.metrics = nn.ModuleDict({f"{stage}_metric": LossAndAccuracy() for stage in STAGES})
        self._first_bad_step: Tensor | None = None
        self._epoch_start = self._train_end = 0.0

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets _current_fx_name twice around every hook call, ~50 times a step; nn.Module's
        # __setattr__ first checks whether the value is a parameter, buffer or module (~1.3 us each time,
        # 5% of a softmax-regression epoch on the CPU). A string is none of these: store it directly.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def setup(self, stage: str) -> None:
        # Processes started by ddp_spawn on the CPU receive every tensor in shared memory; Lightning gives
        # parameters and buffers private copies, but not metric states, which the ranks would then all add into.
        for metric in self.metrics.values():
            metric.reset()  # fresh state tensors, owned by this process

    def configure_model(self) -> None:
        if self.channels_last:  # 1-channel inputs are already NHWC in memory: only the weights change
            self.net.to(memory_format=torch.channels_last)
        if self.compile_net:
            self.net.compile()  # in place: the state_dict keys stay those of the plain module

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def _step(self, stage: str, batch: tuple[Tensor, Tensor]) -> Tensor:
        images, labels = batch
        logits = self.net(images)
        loss = F.cross_entropy(logits, labels)
        self.metrics[f"{stage}_metric"].update(logits, labels, loss)
        return loss

    def _log_epoch(self, stage: str) -> None:
        # Tags read "train/acc", "val/loss", ...; the per-epoch test curves go under "test_epoch/".
        metric = self.metrics[f"{stage}_metric"]
        values = metric.compute()
        metric.reset()
        for name, value in values.items():
            # torchmetrics already synced the value across ranks; sync_dist only quiets Lightning's warning
            self.log(f"{stage}/{name}", value, add_dataloader_idx=False, sync_dist=True)
            if stage == "val":  # the same value under tags that only runs of one model (regularizer) have
                self.log(f"by_model/{self.hparams['model']['name']}/val_{name}", value, sync_dist=True)
                self.log(f"by_regularizer/{self.hparams['regularizer']['name']}/val_{name}", value, sync_dist=True)

    # --- training ------------------------------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        self._synchronize()
        self._epoch_start = time.perf_counter()
        self._first_bad_step = None

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._step("train", batch)
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
        train_images = int(self.metrics["train_metric"].count) * self.trainer.world_size  # before the reset
        self._log_epoch("train")
        self.log("time/epoch_s", now - self._epoch_start, sync_dist=True)
        images_per_s = train_images / max(train_seconds, 1e-9)
        self.log("time/train_images_per_s", images_per_s, sync_dist=True)
        self._train_end = 0.0

    # --- evaluation ----------------------------------------------------------------------------------

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._step("val" if dataloader_idx == 0 else "test_epoch", batch)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self.metrics["val_metric"].reset()
            self.metrics["test_epoch_metric"].reset()
            return
        self._log_epoch("val")
        if self.metrics["test_epoch_metric"].update_count:
            self._log_epoch("test_epoch")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    # --- optimization --------------------------------------------------------------------------------

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        # Lightning's default validates its arguments on every step even when nothing is clipped (~12 us).
        if gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

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
