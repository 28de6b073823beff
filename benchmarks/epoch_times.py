"""Epoch time of the project's training path (Lightning + Hydra config) against a raw PyTorch loop, and of the
least a Lightning Trainer runs for the same training ("bare Lightning"), which splits the project's cost into
Lightning's own and the project's.

    python -m benchmarks.epoch_times [--models softmax mlp cnn] [--regularizers none dropout bn]
        [--precisions auto 32-true bf16-mixed] [--epochs 4] [--train-batches N] [--rounds 1] [--automatic]
        [override ...]

The three sides train the same network with the same optimizer, schedule, batch size and device, on the same
tensor-resident data, and evaluate the validation split every epoch; the ratios are bare Lightning / raw and
project / raw.
Overrides are train.py's (e.g. trainer=gpu, data.batch_size=512). The first epoch is warm-up and is left
out; the median of the rest is reported. Every model runs with every regularizer and precision given;
--train-batches cuts every side's epochs to N training batches (for slow cases, e.g. bf16 on a CPU without it).
--rounds R runs the sides R times each, taking turns (each round starts with the next side): on a shared machine
whose speed drifts, the median of the per-round ratios (printed with its range) is the number to trust.
The bare side steps its optimizer in training_step (manual optimization), as the project's module does;
--automatic adds a fourth side, bare Lightning with Lightning's automatic optimization: what its closure costs.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor

from mnist_study.data.datamodule import MNISTDataModule
from mnist_study.models.optim import build_optimizer
from mnist_study.training.callbacks import EpochTimer, synchronize
from mnist_study.training.pipeline import build_classifier, build_datamodule, build_trainer, quiet_lightning
from mnist_study.training.precision import cpu_name
from mnist_study.training.upstream import skip_lightnings_nvml_check_without_gpus

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def project_epochs(cfg: DictConfig) -> list[float]:
    with tempfile.TemporaryDirectory() as out:
        trainer = build_trainer(cfg, Path(out))
        timer = next(c for c in trainer.callbacks if isinstance(c, EpochTimer))  # train.py's own timing
        L.seed_everything(cfg.seed, verbose=False)
        trainer.fit(build_classifier(cfg), datamodule=build_datamodule(cfg))
    return timer.epoch_seconds


def raw_epochs(cfg: DictConfig, datamodule: MNISTDataModule, device: torch.device, precision: str) -> list[float]:
    """The loop a careful person writes by hand: same network, optimizer, schedule, precision and data tensors,
    and the same per-epoch numbers train.py logs (training and validation loss and accuracy), on the device."""
    bf16 = precision.startswith("bf16")
    L.seed_everything(cfg.seed, verbose=False)
    classifier = build_classifier(cfg)
    classifier.configure_model()  # the same speed switches (channels_last, compile) as in training
    net = classifier.net.to(device)
    batches = train_batches(cfg, datamodule)
    total_steps = cfg.trainer.max_epochs * batches
    optimizer, scheduler = build_optimizer(net.parameters(), cfg.optimizer, cfg.scheduler, total_steps)
    seconds = []
    for epoch in range(cfg.trainer.max_epochs):
        loader = datamodule.train_dataloader(epoch)
        synchronize(device)
        start = time.perf_counter()
        net.train()
        train_loss, train_correct = torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long)
        for images, labels in itertools.islice(loader, batches):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):  # what bf16-mixed does
                logits = net(images)
                loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            train_loss += loss.detach() * len(labels)
            train_correct += (logits.argmax(1) == labels).sum()
        net.eval()
        val_loss, val_correct = torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            for images, labels in datamodule.val_dataloader():  # type: ignore[union-attr]
                logits = net(images)
                val_loss += F.cross_entropy(logits, labels, reduction="sum")
                val_correct += (logits.argmax(1) == labels).sum()
        torch.stack((train_loss, train_correct, val_loss, val_correct)).tolist()  # what would be printed
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


class BareClassifier(L.LightningModule):
    """The least a LightningModule needs for this training: the network, the loss, the optimizer and schedule stepped
    in training_step (manual optimization, as the project's module does), and the raw loop's per-epoch sums; no
    torchmetrics, no self.log."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        classifier = build_classifier(cfg)
        classifier.configure_model()
        self.net, self.cfg = classifier.net, cfg
        self.sums: dict[str, Tensor] = {}
        self.automatic_optimization = False

    def on_train_epoch_start(self) -> None:
        self.sums = {name: torch.zeros((), device=self.device) for name in ("train_loss", "val_loss")}
        self.sums |= {name: torch.zeros((), device=self.device, dtype=torch.long) for name in ("train_ok", "val_ok")}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        images, labels = batch
        logits = self.net(images)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        self.sums["train_loss"] += loss.detach() * len(labels)
        self.sums["train_ok"] += (logits.argmax(1) == labels).sum()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self.net(images)
        if self.sums:  # not in the sanity check before the first epoch
            self.sums["val_loss"] += F.cross_entropy(logits, labels, reduction="sum")
            self.sums["val_ok"] += (logits.argmax(1) == labels).sum()

    def on_train_epoch_end(self) -> None:
        torch.stack([value.float() for value in self.sums.values()]).tolist()  # what would be printed

    def configure_optimizers(self) -> Any:
        steps = int(self.trainer.estimated_stepping_batches)
        optimizer, scheduler = build_optimizer(self.parameters(), self.cfg.optimizer, self.cfg.scheduler, steps)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class AutomaticBareClassifier(BareClassifier):
    """BareClassifier with Lightning's automatic optimization: training_step returns the loss, and Lightning's
    closure does the backward pass, the step and the schedule (--automatic: what the closure costs)."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.automatic_optimization = True

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:  # type: ignore[override]
        images, labels = batch
        logits = self.net(images)
        loss = F.cross_entropy(logits, labels)
        self.sums["train_loss"] += loss.detach() * len(labels)
        self.sums["train_ok"] += (logits.argmax(1) == labels).sum()
        return loss


def bare_lightning_epochs(cfg: DictConfig, module: type[BareClassifier] = BareClassifier) -> list[float]:
    """BareClassifier on a Trainer with the run's trainer settings but no logger, checkpoints, model summary or
    callbacks besides the timer."""
    options: dict[str, Any] = OmegaConf.to_container(cfg.trainer, resolve=True)  # type: ignore[assignment]
    options |= {"enable_checkpointing": False, "enable_model_summary": False, "enable_progress_bar": False}
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as out:
        trainer = L.Trainer(**options, logger=False, callbacks=[timer], default_root_dir=out)
        L.seed_everything(cfg.seed, verbose=False)
        trainer.fit(module(cfg), datamodule=build_datamodule(cfg))
    return timer.epoch_seconds


def train_batches(cfg: DictConfig, datamodule: MNISTDataModule) -> int:
    """Training batches per epoch: all, or +trainer.limit_train_batches=N (--train-batches), as Lightning counts."""
    batches = len(datamodule.train_dataloader())
    limit = cfg.trainer.get("limit_train_batches")
    return batches if limit is None else min(batches, int(limit))


def per_sample_epoch(cfg: DictConfig, device: torch.device) -> float:
    """One training epoch the common way: torchvision's MNIST Dataset, per-sample ToTensor/Normalize, a
    DataLoader. It is what the tensor-resident data module replaces; timed for docs/PERFORMANCE.md."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from mnist_study.data import mnist_files

    mnist_files.ensure_mnist(cfg.data.data_dir, cfg.data.checksums, download=False)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    dataset = datasets.MNIST(cfg.data.data_dir, train=True, download=False, transform=transform)
    loader = DataLoader(dataset, batch_size=cfg.data.batch_size, shuffle=True)
    L.seed_everything(cfg.seed, verbose=False)
    classifier = build_classifier(cfg)
    classifier.configure_model()
    net = classifier.net.to(device)
    optimizer, _ = build_optimizer(net.parameters(), cfg.optimizer, cfg.scheduler, len(loader))
    start = time.perf_counter()
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        loss = F.cross_entropy(net(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    return time.perf_counter() - start


def compose_config(
    model: str, epochs: int, overrides: list[str], regularizer: str | None = None, precision: str | None = None,
    train_batches: int | None = None,
) -> DictConfig:  # fmt: skip
    """train.py's config with `overrides`, then the benchmark's own choices (None: the config's, or the override's)."""
    chosen = {"model": model, "regularizer": regularizer, "trainer.precision": precision}
    chosen |= {"+trainer.limit_train_batches": train_batches, "trainer.max_epochs": epochs}
    own = [f"{key}={value}" for key, value in chosen.items() if value is not None]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, *own])
    with open_dict(cfg):
        cfg.output_dir = tempfile.gettempdir()  # project_epochs trains in a temporary folder of its own
        cfg.trainer.enable_progress_bar = False  # as in every run that is not on an interactive terminal
    return cfg


SIDES = ["raw", "bare", "project"]


def ratio_with_range(times: list[float], raw_times: list[float]) -> str:
    """The median of the per-round ratios, with their range when there are several rounds."""
    ratios = [side / raw for side, raw in zip(times, raw_times, strict=True)]
    spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
    return f"{statistics.median(ratios):.2f}{spread}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["softmax", "mlp", "cnn"])
    parser.add_argument("--regularizers", nargs="+", default=[None], help="e.g. none dropout bn (default: none)")
    parser.add_argument("--precisions", nargs="+", default=[None], help="e.g. 32-true bf16-mixed (default: auto)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per side; the first is warm-up")
    parser.add_argument("--train-batches", type=int, default=None, help="training batches per epoch (default: all)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="the sides take turns this many times; medians (ratio: min-max)"
    )
    parser.add_argument(
        "--per-sample", action="store_true", help="also time one epoch through torchvision's Dataset + DataLoader"
    )
    parser.add_argument(
        "--automatic", action="store_true", help="also bare Lightning with automatic optimization (its closure's cost)"
    )
    parser.add_argument("overrides", nargs="*", help="train.py overrides, e.g. trainer=gpu data.batch_size=512")
    args = parser.parse_args(argv)
    skip_lightnings_nvml_check_without_gpus()  # as train.py does; the raw loop then runs as a Lightning-free script
    quiet_lightning()  # the bare side too: without Lightning's notices that say nothing about the timing
    torch.backends.cudnn.benchmark = True
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # model summaries, "GPU available: ..."

    rows = []
    for model, regularizer, precision in itertools.product(args.models, args.regularizers, args.precisions):
        cfg = compose_config(model, args.epochs, args.overrides, regularizer, precision, args.train_batches)
        # precision=auto resolved for this network, as train.py does
        trainer = build_trainer(cfg, Path(tempfile.gettempdir()), build_classifier(cfg).net)
        device = trainer.strategy.root_device
        datamodule = build_datamodule(cfg)
        datamodule.trainer = trainer  # the same device placement as in training
        datamodule.prepare_data()
        datamodule.setup("fit")
        precision = str(trainer.precision)
        with open_dict(cfg):
            cfg.trainer.precision = precision
        sides = [*SIDES, "automatic"] if args.automatic else SIDES
        times: dict[str, list[float]] = {side: [] for side in sides}
        for round_ in range(args.rounds):  # the sides take turns, so a machine that drifts slows them all
            for side in sides[round_ % len(sides) :] + sides[: round_ % len(sides)]:
                if side == "raw":
                    epochs = raw_epochs(cfg, datamodule, device, precision)
                elif side == "automatic":
                    epochs = bare_lightning_epochs(cfg, AutomaticBareClassifier)
                else:
                    epochs = project_epochs(cfg) if side == "project" else bare_lightning_epochs(cfg)
                times[side].append(statistics.median(epochs[1:] or [float("nan")]))
        seconds = [statistics.median(times[side]) for side in SIDES]
        ratios = [ratio_with_range(times[side], times["raw"]) for side in ("bare", "project")]
        regularizer = cfg.regularizer.name
        rows.append((model, regularizer, precision, *seconds, *ratios))
        print(
            f"{model}-{regularizer} ({precision}): raw {seconds[0]:.3f} s/epoch, bare Lightning {seconds[1]:.3f} "
            f"s/epoch ({ratios[0]}), project {seconds[2]:.3f} s/epoch, ratio {ratios[1]}",
            flush=True,
        )
        if args.automatic:
            automatic = statistics.median(times["automatic"])
            ratio = ratio_with_range(times["automatic"], times["raw"])
            print(f"{model}-{regularizer}: bare Lightning, automatic optimization {automatic:.3f} s/epoch ({ratio})")
        if args.per_sample:
            per_sample = per_sample_epoch(cfg, device)
            print(f"{model}: torchvision Dataset + DataLoader, training only: {per_sample:.3f} s/epoch", flush=True)

    device_name = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"{cpu_name()}, {torch.get_num_threads()} threads"
    )
    batches = f"{args.train_batches} training batches an epoch" if args.train_batches else "whole epochs"
    print(f"\n{device_name}; batch {cfg.data.batch_size}, {batches}; overrides: {' '.join(args.overrides) or 'none'}")
    print(
        "| model | regularizer | precision | raw PyTorch (s/epoch) | bare Lightning (s/epoch) | project (s/epoch) "
        "| bare Lightning / raw | ratio (project / raw) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(f"{cell:.3f}" if isinstance(cell, float) else cell for cell in row) + " |")


if __name__ == "__main__":
    main()
