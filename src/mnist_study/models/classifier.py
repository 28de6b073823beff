"""One LightningModule for every backbone: cross-entropy, the per-epoch metrics, the configured optimizer."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mnist_study.models.attributes import FastPlainAttributes
from mnist_study.models.backbones import build_backbone, parameter_count
from mnist_study.models.metrics import LossAndAccuracy
from mnist_study.models.optim import build_optimizer

# "test_epoch": the test set evaluated after every epoch, for the source reports' plots only.
STAGES = ("train", "val", "test", "test_epoch")


class MNISTClassifier(FastPlainAttributes, L.LightningModule):
    def __init__(
        self,
        model: Mapping[str, Any],
        regularizer: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        channels_last: bool = False,
        compile: bool = False,
        run: Mapping[str, Any] | None = None,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
        accumulate_grad_batches: int | None = None,
    ) -> None:
        super().__init__()
        scheduler = dict(scheduler or {"name": "none"})
        # Plain dicts only, so that checkpoints load with torch.load(weights_only=True). The speed switches
        # do not change the network and stay out of the hyper-parameters. `run`: the other settings a resume must
        # keep (seeds, batches, data, precision: training.resume.run_settings), set by train.py.
        hyper_parameters = {
            "model": dict(model),
            "regularizer": dict(regularizer),
            "optimizer": dict(optimizer),
            "scheduler": scheduler,
        }
        self.save_hyperparameters(hyper_parameters | ({"run": dict(run)} if run is not None else {}), logger=False)
        self.channels_last, self.compile_net = channels_last, compile
        # The module steps its optimizer itself (Lightning's manual optimization): Lightning's automatic loop costs
        # a small network a good share of its epoch (docs/PERFORMANCE.md). Lightning then refuses its Trainer's
        # clipping and accumulation options, so train.py hands trainer.gradient_clip_val, gradient_clip_algorithm
        # and accumulate_grad_batches to the module, which applies them as Lightning's automatic loop does.
        self.automatic_optimization = False
        self.gradient_clip_val = gradient_clip_val or 0.0
        self.gradient_clip_algorithm = gradient_clip_algorithm or "norm"
        self.accumulate_grad_batches = accumulate_grad_batches or 1
        self.net = build_backbone(model, regularizer)
        self.num_parameters = parameter_count(self.net)
        self.example_input_array = torch.zeros(2, 1, 28, 28)  # for the model summary and logger.log_graph
        # Keyed "train_metric", not "train": that name is taken by ModuleDict.train().
        self.metrics = nn.ModuleDict({f"{stage}_metric": LossAndAccuracy() for stage in STAGES})
        self.show_loss = False

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

    def shared_step(self, stage: str, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        images, labels = batch
        logits = self.net(images)
        loss = F.cross_entropy(logits, labels)
        self.metrics[f"{stage}_metric"].update(logits, labels, loss)
        return loss, logits

    def on_fit_start(self) -> None:
        self.show_loss = self.trainer.progress_bar_callback is not None

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self.shared_step("train", batch)
        if self.show_loss:  # the running loss on the progress bar; not logged
            self.log("loss", loss, prog_bar=True, logger=False)
        accumulate = self.accumulate_grad_batches
        self.manual_backward(loss / accumulate if accumulate > 1 else loss)
        if (batch_idx + 1) % accumulate == 0 or batch_idx + 1 == self.trainer.num_training_batches:
            optimizer = self.optimizers()
            optimizer.step()  # clips first: on_before_optimizer_step
            optimizer.zero_grad()
            self.lr_schedulers().step()  # type: ignore[union-attr]
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """trainer.gradient_clip_val: Lightning calls this hook right before the update, with the gradients unscaled
        under 16-mixed, where its automatic loop clips. The clipping is that of Lightning's Precision plugin, done
        here because its MixedPrecision refuses to clip for a fused optimizer even under bf16-mixed, which scales
        no gradients (16-mixed with a fused optimizer is refused in config.checks: its gradients stay scaled)."""
        if self.gradient_clip_val > 0:
            parameters = [parameter for group in optimizer.param_groups for parameter in group["params"]]
            if self.gradient_clip_algorithm == "value":
                nn.utils.clip_grad_value_(parameters, self.gradient_clip_val)
            else:
                nn.utils.clip_grad_norm_(parameters, self.gradient_clip_val)

    def optimizer_steps(self) -> int:
        """The run's optimizer steps, as trainer.estimated_stepping_batches counts them for a Trainer that
        accumulates: here the module does, and the Trainer counts one step a batch."""
        trainer = self.trainer
        steps = int(trainer.estimated_stepping_batches)  # loads the training data first, if need be
        if self.accumulate_grad_batches > 1:
            steps = math.ceil(trainer.num_training_batches / self.accumulate_grad_batches) * max(trainer.max_epochs, 1)
            steps = steps if trainer.max_steps == -1 else min(steps, trainer.max_steps)
        return steps

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        loaders = self.trainer.val_dataloaders
        loader = loaders[dataloader_idx] if isinstance(loaders, (list, tuple)) else loaders
        self.shared_step("test_epoch" if getattr(loader, "split", "val") == "test" else "val", batch)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self.shared_step("test", batch)[1]  # the logits, for the error analysis (error_analysis.py)

    def epoch_training_loss(self) -> Tensor:
        """The mean training loss of the epoch so far (0-d, on the module's device): non-finite as soon as one
        step's loss was (training.callbacks.DivergenceGuard reads it)."""
        metric = self.metrics["train_metric"]
        return metric.loss_sum / metric.count.clamp(min=1)

    def on_train_epoch_end(self) -> None:
        self.log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            for stage in ("val", "test_epoch"):
                self.metrics[f"{stage}_metric"].reset()
            return
        for stage in ("val", "test_epoch"):
            if self.metrics[f"{stage}_metric"].update_count:
                self.log_epoch(stage)

    def on_test_epoch_end(self) -> None:
        self.log_epoch("test")

    def log_epoch(self, stage: str) -> None:
        """`<stage>/acc` and `<stage>/loss`, with the epoch, counted from 1, as TensorBoard's x-axis (Lightning's
        `step` key).
        The test result is not logged to TensorBoard here: callbacks.HParams writes it with the run's
        hyper-parameters, as val_best/*, so that train/ and val/ stay the first groups of Time Series."""
        metric = self.metrics[f"{stage}_metric"]
        values = metric.compute()
        metric.reset()
        to_logger = stage != "test"
        for name, value in values.items():
            # torchmetrics already synced the value across ranks; sync_dist only quiets Lightning's warning
            on_bar = stage == "val" and name == "acc"
            self.log(
                f"{stage}/{name}", value, add_dataloader_idx=False, sync_dist=True, prog_bar=on_bar, logger=to_logger
            )
        if to_logger:
            self.log("step", float(self.current_epoch + 1), add_dataloader_idx=False, sync_dist=True)

    def configure_optimizers(self) -> Any:
        optimizer, scheduler = build_optimizer(
            self.parameters(),
            self.hparams["optimizer"],
            self.hparams["scheduler"],
            self.optimizer_steps(),
        )
        if scheduler is None:  # a constant rate, as a schedule: LearningRateMonitor names only schedules' rates
            scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
        # "name": the tag of a LearningRateMonitor, if one is added (+callbacks.): the rate per optimizer step, in a
        # group of its own that sorts after the study's; the run's train/lr is EpochLearningRate's, once an epoch
        schedule = {"scheduler": scheduler, "interval": "step", "name": "z_steps/lr"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}
