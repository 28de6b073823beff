"""`python q1.py k=2,4,8`: one gradient-descent job per K with its TensorBoard logs, then the report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from torch.utils.tensorboard import SummaryWriter

from mnist_study.manual_backprop.config import settings_from
from mnist_study.manual_backprop.descent import HISTORY_FILE, History, descend, side_by_side
from mnist_study.manual_backprop.report import write_report
from mnist_study.runs.artifacts import FAILURE_FILE

# q1's TensorBoard group. It sorts after the study's groups (train/, val/, val_*), so that a TensorBoard opened on a
# folder that holds both (tensorboard --logdir outputs) still opens Time Series on the study's train/ and val/.
GROUP = "z_q1"


def loss_tag(k: int) -> str:
    """Each K's own chart in TensorBoard, holding its two runs (the folders manual/ and autograd/)."""
    return f"{GROUP}/loss_k={k}"


def run(cfg: DictConfig) -> History:
    settings = settings_from(cfg)
    output_dir = Path(cfg.output_dir)
    writers = {name: SummaryWriter(str(output_dir / name)) for name in ("manual", "autograd")}
    differences = SummaryWriter(str(output_dir))
    tag = loss_tag(settings.k)

    def log_epoch(epoch: int, h: History) -> None:
        writers["manual"].add_scalar(tag, h.loss_manual[-1], epoch)
        writers["autograd"].add_scalar(tag, h.loss_autograd[-1], epoch)
        differences.add_scalar(f"{GROUP}/diff_max_abs_param", h.max_abs_param_diff[-1], epoch)
        differences.add_scalar(f"{GROUP}/diff_max_abs_grad", h.max_abs_grad_diff[-1], epoch)
        differences.add_scalar(f"{GROUP}/diff_max_rel_grad", h.max_rel_grad_error[-1], epoch)

    history = descend(settings, on_epoch=log_epoch)
    for writer in (*writers.values(), differences):
        writer.close()
    history.save(output_dir)
    print(
        f"\nk={settings.k} engine={settings.engine} backend={settings.backend} ({history.device}) "
        f"combine={settings.combine} n_samples={settings.n_samples}: "
        f"loss {history.loss_manual[0]:.6g} -> {history.loss_manual[-1]:.6g} (manual), "
        f"{history.loss_autograd[-1]:.6g} (autograd); largest relative gradient difference "
        f"{max(history.max_rel_grad_error):.2e}\n\n{side_by_side(history)}\n"
    )
    return history


class SweepReport(Callback):
    """After the sweep: report.md and its figures in the sweep folder; a non-zero exit if a job failed
    (its one-line error is already in the log, and in the report)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        histories = [History.load(p) for p in sorted(sweep_dir.glob(f"**/{HISTORY_FILE}"))]
        failed = sorted(sweep_dir.glob(f"**/{FAILURE_FILE}"))
        failures = [f"{p.parent.name}: {p.read_text().splitlines()[0]}" for p in failed]
        if histories:
            command = " ".join(["python q1.py", *config.hydra.overrides.task])
            report = write_report(histories, sweep_dir, command, failures)
            print(f"report: {report}\nlogs: tensorboard --logdir {sweep_dir}")
        if failures:
            sys.exit(1)
