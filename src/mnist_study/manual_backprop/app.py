"""`python q1.py k=2,4,8`: one gradient-descent job per K, TensorBoard logs, and the loss-vs-epoch figure."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter

from mnist_study.cli import FAILURE_FILE
from mnist_study.manual_backprop.descent import HISTORY_FILE, History, Settings, descend, side_by_side

FIGURE_FILE = "loss_vs_epoch.png"


def settings_from(cfg: DictConfig) -> Settings:
    options = OmegaConf.to_container(cfg, resolve=True)
    options.pop("output_dir", None)  # type: ignore[union-attr]
    return Settings(**options)  # type: ignore[arg-type]


def run(cfg: DictConfig) -> History:
    settings = settings_from(cfg)
    output_dir = Path(cfg.output_dir)
    # Two runs under one tag: TensorBoard draws the manual and autograd losses in one chart.
    writers = {name: SummaryWriter(str(output_dir / name)) for name in ("manual", "autograd")}
    differences = SummaryWriter(str(output_dir))

    def log_epoch(epoch: int, h: History) -> None:
        writers["manual"].add_scalar("loss", h.loss_manual[-1], epoch)
        writers["autograd"].add_scalar("loss", h.loss_autograd[-1], epoch)
        differences.add_scalar("diff/max_abs_param", h.max_abs_param_diff[-1], epoch)
        differences.add_scalar("diff/max_abs_grad", h.max_abs_grad_diff[-1], epoch)
        differences.add_scalar("diff/max_rel_grad", h.max_rel_grad_error[-1], epoch)

    history = descend(settings, on_epoch=log_epoch)
    for writer in (*writers.values(), differences):
        writer.close()
    history.save(output_dir)
    print(
        f"\nk={settings.k} engine={settings.engine} combine={settings.combine} n_samples={settings.n_samples}: "
        f"loss {history.loss_manual[0]:.6g} -> {history.loss_manual[-1]:.6g} (manual), "
        f"{history.loss_autograd[-1]:.6g} (autograd); largest relative gradient error "
        f"{max(history.max_rel_grad_error):.2e}\n\n{side_by_side(history)}\n"
    )
    return history


def plot(histories: list[History], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, error_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, h in enumerate(sorted(histories, key=lambda h: h.settings["k"])):
        color, k = f"C{i}", h.settings["k"]
        loss_ax.plot(h.loss_manual, color=color, lw=2.5, alpha=0.55, label=f"K={k} manual")
        loss_ax.plot(h.loss_autograd, color=color, ls="--", lw=1.2, label=f"K={k} autograd")
        error_ax.plot(h.max_rel_grad_error, color=color, label=f"K={k}")
    loss_ax.set(xlabel="epoch", ylabel="loss  ||Cz||²", yscale="log", title="Loss vs epoch: manual and autograd")
    error_ax.set(xlabel="epoch", ylabel="max relative error", yscale="log", title="Manual vs autograd gradients")
    loss_ax.legend(fontsize=8, ncol=2)
    error_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class LossFigure(Callback):
    """After the sweep: the figure of every K's loss curves; a non-zero exit if a job failed (its
    one-line error is already in the log)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        histories = [History.load(p) for p in sorted(sweep_dir.glob(f"**/{HISTORY_FILE}"))]
        if histories:
            plot(histories, sweep_dir / FIGURE_FILE)
            print(f"figure: {sweep_dir / FIGURE_FILE}\nlogs: tensorboard --logdir {sweep_dir}")
        if list(sweep_dir.glob(f"**/{FAILURE_FILE}")):
            sys.exit(1)
