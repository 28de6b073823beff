"""A train.py checkpoint's network for inference, refused in one line when it cannot be: the checks resume makes
(training.checkpoint_io: a damaged or non-checkpoint file; training.resume: a Lightning checkpoint of something
else), then whether this version of the project builds the network it names and its weights fit."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mnist_study.config.schema import GROUPS, DataConfig
from mnist_study.errors import UserError
from mnist_study.models.classifier import MNISTClassifier
from mnist_study.runs.artifacts import RESULT_FILE
from mnist_study.training.checkpoint_io import UnreadableCheckpoint, check_loadable
from mnist_study.training.resume import run_dir_of, train_py_options

CUT_SHORT_ADVICE = "pass another checkpoint of the run (checkpoints/last.ckpt or best-epoch<NN>.ckpt)"
RUN_CONFIG = Path(".hydra") / "config.yaml"  # where Hydra keeps a run's composed config


@dataclass(frozen=True)
class TrainedModel:
    """A checkpoint's classifier (fp32, on the CPU, in eval mode), the options it was trained with, and its run."""

    classifier: MNISTClassifier
    path: Path
    options: dict[str, Any]
    run_dir: Path | None

    @property
    def network(self) -> str:
        """e.g. cnn-bn, as run folders name it."""
        return f"{self.options['model']['name']}-{self.options['regularizer']['name']}"

    def run_config(self) -> DictConfig | None:
        """The run's composed train.py config, where the checkpoint lies in a run folder that has it."""
        path = self.run_dir / RUN_CONFIG if self.run_dir is not None else None
        if path is None or not path.is_file():
            return None
        try:
            return OmegaConf.load(path)
        except (OSError, OmegaConfBaseException):
            return None  # the checkpoint holds all it needs; the run's config only adds its data settings

    def run_result(self) -> dict[str, Any]:
        """The run's result.json, or {} (an interrupted run, or a checkpoint outside its run folder)."""
        path = self.run_dir / RESULT_FILE if self.run_dir is not None else None
        try:
            return json.loads(path.read_text()) if path is not None and path.is_file() else {}
        except (OSError, ValueError):
            return {}


def load_trained(ckpt_path: str | Path) -> TrainedModel:
    """The network a train.py checkpoint holds; one-line UserError naming `ckpt_path=...` when it cannot be had."""
    path, name = Path(ckpt_path), f"ckpt_path={ckpt_path}"
    try:
        check_loadable(path, advice=CUT_SHORT_ADVICE)
    except UnreadableCheckpoint as err:
        raise UnreadableCheckpoint(f"ckpt_path={err}") from None
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    options = train_py_options(checkpoint, name, "checkpoints/best-epoch<NN>.ckpt or last.ckpt")
    for group in ("model", "regularizer"):
        check_known_option(name, group, options[group])
    classifier = MNISTClassifier(
        model=options["model"],
        regularizer=options["regularizer"],
        optimizer=options["optimizer"],
        scheduler=options.get("scheduler"),
    )
    try:
        classifier.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise UserError(
            f"{name} holds weights that do not fit the {options['model']['name']}-{options['regularizer']['name']} "
            f"network its own hyper-parameters describe ({weights_problem(err)}): the file was put together from "
            "two checkpoints, or saved by a version of the project that builds this network otherwise; pass a "
            "checkpoint as train.py saved it, or evaluate it with the version that trained it"
        ) from None
    return TrainedModel(classifier.eval(), path, options, run_dir_of(path.resolve()))


def check_known_option(name: str, group: str, saved: Mapping[str, Any]) -> None:
    """The checkpoint's `group` option must be one this version knows, with keys its schema has."""
    options = GROUPS[group]
    option = saved.get("name")
    if option not in options:
        raise UserError(
            f"{name} was trained with {group}={option}, which this version of the project does not have (it has "
            f"{', '.join(options)}): evaluate it with the version that trained it"
        )
    known = [f.name for f in fields(options[option])]
    if unknown := [key for key in saved if key not in known]:
        raise UserError(
            f"{name} was trained with {group}.{unknown[0]}, an option this version's {group}={option} does not "
            f"have (it has {', '.join(known)}): evaluate it with the version that trained it"
        )


def weights_problem(err: RuntimeError) -> str:
    """The gist of load_state_dict's several-line error: the first size mismatch or missing/unexpected keys."""
    text = str(err)
    found = re.search(r"size mismatch for [^:]+: [^.]+?(?:\.|$)", text, re.MULTILINE) or re.search(
        r"(?:Missing|Unexpected) key\(s\) in state_dict: [^\n]{0,120}", text
    )
    return found.group(0).rstrip(". ") if found else text.strip().splitlines()[-1][:160]


def data_settings(trained: TrainedModel, given: Mapping[str, Any]) -> dict[str, Any]:
    """MNISTDataModule's arguments: train.py's defaults, over them the run's own data settings, over those each
    key given (not null) on the command line. The validation split is then the one the run was trained with."""
    settings = {f.name: f.default for f in fields(DataConfig) if f.name != "batch_size"}
    if (run := trained.run_config()) is not None and isinstance(run.get("data"), DictConfig):
        try:
            run_data = OmegaConf.to_container(run.data, resolve=True)
        except OmegaConfBaseException:
            run_data = {}
        settings |= {key: value for key, value in run_data.items() if key in settings}
    settings |= {key: value for key, value in given.items() if value is not None}
    return settings
