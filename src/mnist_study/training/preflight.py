"""What a train.py job is checked for before anything is written or started: its values (config.checks), what
this machine can run (training.resources), the folder it writes into (runs.folders) and the checkpoint it goes on
from (training.resume). train.py checks every job of its command line before Hydra starts (the values of all
jobs first, then check_whole_job on each, as check_train_command_line does); train() checks its own job again (a
notebook, a SLURM node, an in-process test)."""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from mnist_study.config import as_dict
from mnist_study.config.command_line import check_command_line
from mnist_study.data.mnist_files import check_path_kinds, checked_checksums
from mnist_study.errors import UserError, first_line
from mnist_study.runs.artifacts import RESULT_FILE
from mnist_study.runs.folders import check_writable, first_difference
from mnist_study.training.checkpoint_io import checkpoint_problem
from mnist_study.training.resources import check_memory, check_processes
from mnist_study.training.resume import LAST, check_position, check_resumable

# Keys of a run's config that say where its files go, not what it trains.
NOT_THE_RUN = ("output_dir", "ckpt_path")


def check_train_command_line(overrides: Sequence[str], config_dir: Path, multirun: bool = False) -> int:
    """check_command_line with, for every job, this machine's resources, the folder the job would write into and
    the checkpoint it would go on from; UserError at the first problem. Returns the number of jobs."""
    return check_command_line(overrides, config_dir, check_job=lambda cfg, hydra: check_whole_job(cfg, hydra, multirun))


def check_whole_job(cfg: DictConfig, hydra: DictConfig, multirun: bool) -> None:
    """A job whose values are good (config.checks), with its Hydra config: where it runs and what it writes."""
    launcher = str(OmegaConf.select(hydra, "launcher._target_", default=""))
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    folder = Path(hydra.sweep.dir) / str(hydra.sweep.subdir) if multirun else Path(hydra.run.dir)
    check_writable(Path(hydra.sweep.dir) if multirun else folder, key)
    check_job(cfg, multirun, on_this_machine="slurm" not in launcher.lower(), checkpoint=True)
    check_folder(cfg, folder, key, excluded_keys(hydra))


def excluded_keys(hydra: DictConfig) -> list[str]:
    """The overrides that do not tell runs apart (left out of folder names): data_dir, the progress bar..."""
    keys = OmegaConf.select(hydra, "job.config.override_dirname.exclude_keys", default=None) or []
    return [str(key) for key in keys]


def check_job(cfg: DictConfig, multirun: bool, on_this_machine: bool = True, checkpoint: bool = False) -> None:
    """The checks of one job beyond its values: a checkpoint only for a single run, the processes and memory it
    needs where it runs on this machine, the data's checksums, and (`checkpoint`) the checkpoint it resumes."""
    if multirun and cfg.ckpt_path is not None:
        raise UserError(
            f"ckpt_path={cfg.ckpt_path} resumes one run and cannot be given to a -m sweep: a sweep resumes its "
            "interrupted jobs by itself when its command is run again with the same hydra.sweep.dir"
        )
    checked_checksums(as_dict(cfg, "data").get("checksums"))
    check_path_kinds(cfg.data.data_dir)
    if on_this_machine:  # a SLURM job's node has other cores and GPUs: it checks for itself in train()
        check_processes(as_dict(cfg, "trainer"), bool(cfg.oversubscribe))
        check_memory(cfg)
    if checkpoint and cfg.ckpt_path is not None:
        path = Path(cfg.ckpt_path)
        check_position(path)
        check_resumable(path, cfg)


def check_folder(cfg: DictConfig, folder: Path, key: str, excluded: Sequence[str] = ()) -> None:
    """The folder a job writes into, as it is now: a finished run there must have been trained with the same
    options (it is never overwritten by another run), an interrupted one must be resumable with them."""
    if cfg.ckpt_path is not None:
        return  # the checkpoint's own run folder, checked with the checkpoint
    if (folder / RESULT_FILE).is_file():
        saved = saved_config(folder)
        now = OmegaConf.to_container(cfg, resolve=False)
        difference = first_difference(saved, now, [*excluded, *NOT_THE_RUN]) if saved is not None else None
        if difference is not None:
            name, before, given = difference
            raise UserError(
                f"{key}={folder} holds a finished run with {name}={text(before)}, this command has "
                f"{name}={text(given)}: a finished run is never overwritten; choose another {key}, or give its "
                "options to read its result"
            )
        return
    last = folder / "checkpoints" / LAST
    if last.is_file() and not checkpoint_problem(last):  # an unreadable one is moved aside when the job starts
        check_resumable(last, cfg, name=str(last))


def saved_config(folder: Path) -> dict[str, Any] | None:
    """The config a run in `folder` was started with (.hydra/config.yaml), or None where it cannot be read."""
    path = folder / ".hydra" / "config.yaml"
    try:
        saved = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # absent, unreadable, not YAML: nothing to compare with
        return None
    return saved if isinstance(saved, dict) else None


def text(value: Any) -> str:
    return "null" if value is None else str(value)


@contextmanager
def lightning_refusals() -> Iterator[None]:
    """Lightning's refusal of an option while building the Trainer and its callbacks (a strategy that needs a
    package or a GPU, a callback's argument out of range) as one UserError; errors raised outside Lightning's and
    Hydra's code stay real errors, with their traceback."""
    try:
        yield
    except Exception as err:
        cause = err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ is not None else err
        if isinstance(cause, UserError):
            raise
        raised_in = traceback.extract_tb(cause.__traceback__)[-1].filename if cause.__traceback__ else ""
        from_lightning = f"{os.sep}lightning{os.sep}" in raised_in
        if not (isinstance(cause, (MisconfigurationException, ImportError)) or from_lightning):
            raise
        raise UserError(f"Lightning refuses this configuration: {first_line(cause)}") from err
