"""Hydra callbacks that write a sweep's reports when the sweep ends (conf/train.yaml, conf/experiment/tune.yaml)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mnist_study.errors import UserError
from mnist_study.reporting.report import write_report
from mnist_study.reporting.tuning import write_tuning_report


class StudyReport(Callback):
    """Writes the report when a `train.py -m` sweep ends; exits non-zero if any job failed. A search
    (hparams_search=...) is summed up by its own callback instead."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("optimized_metric") is not None:  # a search: its summary is optuna.md, failed trials included
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        runs = write_report(sweep_dir)
        print(f"report: {sweep_dir / 'report.md'}")
        if any(sweep_dir.glob("*/events.out.tfevents.*")):  # logger=tensorboard (the default) or among many
            print(f"logs: tensorboard --logdir {sweep_dir}")
        if failed := [r for r in runs if not r.ok]:
            print(f"error: {len(failed)} of {len(runs)} runs have no result (listed in the report)", file=sys.stderr)
            sys.exit(1)


class TuningReport(Callback):
    """Writes tune.md when a tuning sweep ends. A problem is printed, not raised, so that the study report
    (hydra.callbacks.report, which sets the exit code) still runs."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            path, block = write_tuning_report(Path(config.hydra.sweep.dir))
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            return
        print("\n".join([f"tuning: {path}", *block]))
