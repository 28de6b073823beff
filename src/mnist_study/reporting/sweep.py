"""A sweep read back from its run folders: one `Run` per job, from what the job wrote.

`result.json` gives the test metrics and what ran (model, regularizer, seed, epochs, optimizer and learning
rate, device, versions, times, confusion matrix); `epochs.csv` the per-epoch curves, whatever loggers the run
had; Hydra's `.hydra/` folder the overrides
and the config of a run that failed. The report, the learning-rate tuning and the comparison of two sweeps all
read sweeps through `collect`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mnist_study.config.schema import GROUPS, TrainerConfig
from mnist_study.errors import UserError, first_line
from mnist_study.runs.artifacts import EPOCH_SECONDS, FAILURE_FILE, IMAGES_PER_SECOND, OTHER_RANKS_FAILURE_FILES
from mnist_study.runs.epoch_rows import epoch_curves
from mnist_study.runs.folders import read_result

BASELINE = "none"  # the regularizer the others are compared with
CURVES = ("train/acc", "train/loss", "val/acc", "val/loss", "test_epoch/acc", "test_epoch/loss")
EPOCH_TAGS = (*CURVES, EPOCH_SECONDS, IMAGES_PER_SECOND)
GROUP_KEYS = ("model", "regularizer", "seed")  # the overrides that a report's rows and seeds already show
# What ran, from result.json, or else from the run's resolved config.
SETTINGS = {
    "optimizer": "optimizer.name",
    "scheduler": "scheduler.name",
    "batch_size": "data.batch_size",
    "precision": "trainer.precision",
    "dropout_mask": "regularizer.mask",
    "device": None,
    "device_name": None,
    "torch": None,
    "lightning": None,
}


@dataclass(frozen=True)
class Study:
    """The full study: every model with every regularizer (the schema's groups, in conf/experiment/study.yaml's
    order) for the default trainer's epochs."""

    models: tuple[str, ...] = tuple(GROUPS["model"])
    regularizers: tuple[str, ...] = tuple(GROUPS["regularizer"])
    epochs: int = TrainerConfig.max_epochs


@dataclass
class Run:
    name: str
    model: str
    regularizer: str
    seed: int
    overrides: dict[str, str] = field(default_factory=dict)
    variant: str = ""  # the other overrides the sweep varied (e.g. optimizer=sgd): runs differing there are not seeds
    parameters: int = 0
    curves: dict[str, list[float]] = field(default_factory=dict)
    test_acc: float | None = None
    test_loss: float | None = None
    error: str | None = None  # failed or incomplete: why
    run_dir: Path | None = None
    lr: float | None = None
    epochs: int | None = None
    best_val_acc: float | None = None
    seconds: float | None = None
    started: datetime | None = None
    finished: datetime | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # the keys of SETTINGS that are known
    config: DictConfig | None = None  # the run's composed config (.hydra/config.yaml)
    per_class_acc: list[float] | None = None
    confusion_matrix: list[list[int]] | None = None
    exploded: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str:
        return self.model if not self.variant else f"{self.model} ({self.variant})"

    @property
    def best_val_epoch(self) -> int | None:
        """The first epoch (counted from 1, as everywhere) at which validation accuracy reached its best."""
        values = self.curves.get("val/acc")
        return values.index(max(values)) + 1 if values else None

    @property
    def last_gap(self) -> float:
        """Training minus validation accuracy at the last epoch (NaN when either was not logged)."""
        train, val = self.curves.get("train/acc"), self.curves.get("val/acc")
        return train[-1] - val[-1] if train and val else math.nan

    def mean(self, tag: str) -> float:
        values = self.curves.get(tag, [])
        # The first epoch pays for warm-up (allocations, caches): leave it out of the timing when possible.
        values = values[1:] if len(values) > 1 else values
        return statistics.fmean(values) if values else math.nan


def overrides_of(run_dir: Path) -> dict[str, str]:
    """The run's command-line overrides, less those that do not tell runs apart (where the data lives, the
    progress bar...): the keys the sweep left out of its run folders' names."""
    path = run_dir / ".hydra" / "overrides.yaml"
    overrides = OmegaConf.load(path) if path.is_file() else []
    pairs = dict(str(o).lstrip("+~").split("=", 1) for o in overrides if "=" in str(o))  # type: ignore[misc]
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    hydra_cfg = OmegaConf.load(hydra_file) if hydra_file.is_file() else OmegaConf.create()
    excluded = OmegaConf.select(hydra_cfg, "hydra.job.config.override_dirname.exclude_keys", default=None) or []
    return {k: v for k, v in pairs.items() if k not in excluded}


def config_value(cfg: DictConfig, key: str) -> Any:
    """`key` of a run's saved config, resolved; None if absent or not resolvable outside the run."""
    return OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)


def learning_rate(result: dict[str, Any], overrides: dict[str, str], cfg: DictConfig) -> float | None:
    """The run's peak learning rate: result.json, else the override, else the resolved config."""
    for value in (result.get("lr"), overrides.get("optimizer.lr"), config_value(cfg, "optimizer.lr")):
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return None


def timestamp(text: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class UnreadableRun(UserError):
    """A job folder the report cannot read: its reason is listed in the report."""


def train_config(run_dir: Path) -> DictConfig:
    """The job's .hydra/config.yaml; UnreadableRun if it is no YAML mapping or not the config of a train.py run."""
    try:
        cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    except (OSError, yaml.YAMLError, OmegaConfBaseException) as err:
        raise UnreadableRun(f"its .hydra/config.yaml does not read ({first_line(err)})") from None
    if not isinstance(cfg, DictConfig) or not all(
        isinstance(cfg.get(group), DictConfig) and "name" in cfg[group] for group in ("model", "regularizer")
    ):
        raise UnreadableRun("not a train.py run (its .hydra/config.yaml names no model and regularizer)")
    return cfg


def read_run_or_reason(run_dir: Path, sweep_dir: Path) -> Run:
    """read_run; a job that cannot be read is a Run whose error says why (the report lists it and goes on)."""
    try:
        return read_run(run_dir, sweep_dir)
    except (UserError, OSError, ValueError, KeyError, TypeError, OmegaConfBaseException) as err:
        reason = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {first_line(err)}"
        return Run(str(run_dir.relative_to(sweep_dir)), "unknown", "unknown", 0, run_dir=run_dir,
                   error=f"unreadable: {reason}")  # fmt: skip


def read_run(run_dir: Path, sweep_dir: Path) -> Run:
    cfg = train_config(run_dir)
    name = str(run_dir.relative_to(sweep_dir))
    run = Run(name, str(cfg.model.name), str(cfg.regularizer.name), int(cfg.seed), overrides=overrides_of(run_dir))
    run.run_dir, run.config = run_dir, cfg
    run.lr = learning_rate({}, run.overrides, cfg)
    run.epochs = config_value(cfg, "trainer.max_epochs")
    run.settings = {k: v for k, key in SETTINGS.items() if key and (v := config_value(cfg, key)) is not None}
    records = [run_dir / FAILURE_FILE, *sorted(run_dir.glob(OTHER_RANKS_FAILURE_FILES))]
    if failures := [path for path in records if path.is_file()]:  # rank 0's first, else another DDP rank's
        run.error = "failed: " + first_line(RuntimeError(failures[0].read_text(errors="replace")))
        return run
    scalars = epoch_curves(run_dir)
    run.curves = {tag: scalars[tag] for tag in EPOCH_TAGS if tag in scalars}
    result = read_result(run_dir)  # DamagedResult: listed as unreadable
    if result is None:
        epochs = len(run.curves.get("val/acc", []))
        run.error = f"incomplete: {epochs} of {run.epochs} epochs logged and no test result"
        return run
    run.model, run.regularizer, run.seed = result["model"], result["regularizer"], int(result["seed"])
    run.parameters, run.test_acc, run.test_loss = result["parameters"], result["test/acc"], result["test/loss"]
    run.lr = learning_rate(result, run.overrides, cfg)
    run.epochs = int(result.get("epochs", run.epochs))
    val = run.curves.get("val/acc")
    run.best_val_acc = result.get("best_val/acc", max(val) if val else None)
    run.settings |= {key: result[key] for key in SETTINGS if result.get(key) is not None}
    run.seconds = result.get("seconds")
    run.started, run.finished = timestamp(result.get("started")), timestamp(result.get("finished"))
    run.per_class_acc = result.get("per_class_acc")
    run.confusion_matrix = result.get("confusion_matrix")
    run.exploded = bool(result.get("exploded", False))
    return run


def varied_keys(runs: list[Run], grouped_by: Sequence[str] = GROUP_KEYS) -> list[str]:
    """The overrides, other than those in `grouped_by`, whose value differs between runs."""
    keys = {k for r in runs for k in r.overrides if k not in grouped_by}
    return sorted(k for k in keys if len({r.overrides.get(k) for r in runs}) > 1)


def collect(sweep_dir: Path, grouped_by: Sequence[str] = GROUP_KEYS) -> list[Run]:
    """Every run of the sweep. A run's `variant` names the other overrides the sweep varied: runs of one model and
    regularizer that differ there are other networks, not other seeds (`grouped_by`: the keys that are not)."""
    run_dirs = sorted(p.parent.parent for p in sweep_dir.glob("**/.hydra/config.yaml"))
    runs = [read_run_or_reason(d, sweep_dir) for d in run_dirs]
    varied = varied_keys(runs, grouped_by)
    for run in runs:
        run.variant = ",".join(f"{k}={run.overrides[k]}" for k in varied if k in run.overrides)
    return runs


def in_study_order(names: Iterable[str]) -> list[str]:
    """The study's models and regularizers in the study's order, any others after them."""
    study = Study()
    known, unique = [*study.models, *study.regularizers], set(names)
    return [n for n in known if n in unique] + sorted(unique - set(known))


def models_of(runs: list[Run]) -> list[str]:
    """Row labels: each model, with its variant where the sweep varied more than model, regularizer and seed."""
    labels = in_study_order(r.model for r in runs)
    return [lab for m in labels for lab in sorted({r.label for r in runs if r.model == m})]


def regularizers_of(runs: list[Run]) -> list[str]:
    return in_study_order(r.regularizer for r in runs)


def group(runs: list[Run], model: str, regularizer: str) -> list[Run]:
    """The finished seeds of one network; `model` is a row label (a model and its variant)."""
    return [r for r in runs if r.ok and r.label == model and r.regularizer == regularizer]


def networks_of(runs: list[Run]) -> list[tuple[str, str]]:
    """(model label, regularizer) of every network with a finished run, in the study's order."""
    return [(m, reg) for m in models_of(runs) for reg in regularizers_of(runs) if group(runs, m, reg)]


def best_network(runs: list[Run]) -> tuple[str, str] | None:
    networks = networks_of(runs)
    if not networks:
        return None
    return max(networks, key=lambda net: statistics.fmean(r.test_acc for r in group(runs, *net)))  # type: ignore[misc]
