"""The logger group's checks: each entry of `logger` (conf/logger/) is {_target_: a Lightning logger, its arguments},
checked before training against the target's own signature, names and types, and for the optional package it
needs. Each problem is one UserError naming the key, the value and what is allowed."""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import os
import types
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any, ForwardRef, Literal, Union, get_args, get_origin

from omegaconf import DictConfig, ListConfig, OmegaConf

from mnist_study.errors import UserError

# The logger's arguments that train.py sets: every logger writes into the run's folder.
SET_BY_TRAIN = ("save_dir", "dir", "log_dir", "experiment")
# Loggers that need an optional package: class name -> (the extra in pyproject.toml, the modules it provides).
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "MLFlowLogger": ("mlflow", ("mlflow", "sqlalchemy", "alembic")),
    "WandbLogger": ("wandb", ("wandb",)),
}
# Where a logger's **kwargs go, to check those too.
KWARGS_RECEIVERS = {"TensorBoardLogger": "torch.utils.tensorboard.SummaryWriter", "WandbLogger": "wandb.init"}
ENTRY = "{_target_: a Lightning logger, its arguments}"


def check_loggers(node: Any) -> None:
    """UserError for the first entry of the logger group that would not build: its target, an unknown argument,
    a value of the wrong type, a missing package."""
    if node is None:
        return
    if not isinstance(node, DictConfig):
        raise UserError(f"logger must be a mapping of names to {ENTRY}, got {node!r}: choose loggers with logger=")
    for name in node:
        if node[name] is not None:  # logger.<name>=null drops one
            check_logger(str(name), node[name])


def check_callbacks_have_a_logger(loggers: Any, callbacks: Any) -> None:
    """Lightning's LearningRateMonitor refuses a Trainer without a logger: say so in one line, before training."""
    if isinstance(loggers, DictConfig) and any(entry is not None for entry in loggers.values()):
        return
    for name, entry in (callbacks or {}).items():
        if isinstance(entry, DictConfig) and str(entry.get("_target_", "")).endswith("LearningRateMonitor"):
            raise UserError(
                f"callbacks.{name} (LearningRateMonitor) needs a logger and this run has none: add "
                f"~callbacks.{name}, or keep a logger (epochs.csv records each epoch's rate either way)"
            )


def check_logger(name: str, entry: Any) -> None:
    key = f"logger.{name}"
    if not isinstance(entry, DictConfig) or "_target_" not in entry:
        raise UserError(
            f"{key} must be {ENTRY}, got {entry!r}: choose loggers with logger=tensorboard|csv|mlflow|wandb|many and "
            f"set their arguments as logger.<name>.<argument> (e.g. logger.tensorboard.flush_secs=10)"
        )
    target = str(entry._target_)
    cls = logger_class(target)
    if cls is None:
        raise UserError(f"{key}._target_={target} is not a class that can be imported")
    from lightning.pytorch.loggers import Logger

    if not (isinstance(cls, type) and issubclass(cls, Logger)):
        raise UserError(f"{key}._target_={target} is not a Lightning logger (a lightning.pytorch.loggers.Logger)")
    if (extra := EXTRAS.get(cls.__name__)) and (missing := next((m for m in extra[1] if not installed(m)), None)):
        option = f"logger={name}" if name == extra[0] else f"{key} ({cls.__name__})"
        raise UserError(f"{option} needs the {missing} package: pip install -e '.[{extra[0]}]'")
    parameters, open_ended = arguments(cls)
    for argument in entry:
        if argument == "_target_":
            continue
        if argument in SET_BY_TRAIN:
            raise UserError(f"{key}.{argument} is set by train.py itself (every logger writes into the run's folder)")
        if argument not in parameters:
            if open_ended:
                continue
            close = difflib.get_close_matches(str(argument), list(parameters), n=1)
            hint = f"did you mean {key}.{close[0]}? " if close else ""
            raise UserError(f"{key}.{argument} is not a {cls.__name__} argument: {hint}see help({target})")
        if OmegaConf.is_interpolation(entry, argument):
            continue  # resolved when the run starts (${output_dir})
        value = entry[argument]
        plain = OmegaConf.to_container(value, resolve=False) if isinstance(value, (DictConfig, ListConfig)) else value
        if not accepts(plain, parameters[argument]):
            raise UserError(f"{key}.{argument} must be {describe(parameters[argument])}, got {plain!r}")


def logger_class(target: str) -> type | None:
    from hydra.utils import get_class

    try:
        return get_class(target)
    except Exception:  # ImportError, or Hydra's wrapping of it
        return None


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


@cache
def arguments(cls: type) -> tuple[dict[str, Any], bool]:
    """The arguments a logger class takes, with their annotations (for **kwargs, those of the function that
    receives them where it is known and installed), and whether any other key goes (**kwargs we cannot see)."""
    found, open_ended = {}, False
    for name, parameter in inspect.signature(cls).parameters.items():
        if parameter.kind == parameter.VAR_KEYWORD:
            receiver = next((KWARGS_RECEIVERS[c.__name__] for c in cls.__mro__ if c.__name__ in KWARGS_RECEIVERS), None)
            module, _, function = (receiver or "").rpartition(".")
            if receiver is None or not installed(module.split(".")[0]):
                open_ended = True
                continue
            found |= keyword_arguments(getattr(importlib.import_module(module), function))
        elif parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            found[name] = expected_type(parameter)
    return found, open_ended


def keyword_arguments(function: Any) -> dict[str, Any]:
    parameters = inspect.signature(function).parameters.values()
    return {p.name: expected_type(p) for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def expected_type(parameter: inspect.Parameter) -> Any:
    """Its annotation, or for an unannotated argument the type of its default (SummaryWriter's flush_secs=120)."""
    if parameter.annotation is not parameter.empty:
        return parameter.annotation
    default = parameter.default
    return type(default) if isinstance(default, (bool, int, float, str)) else Any


def accepts(value: Any, hint: Any) -> bool:
    """Whether a YAML or command-line value fits the annotation `hint`; True where the annotation says too little."""
    if hint in (Any, inspect.Parameter.empty) or isinstance(hint, (str, ForwardRef)):
        return True
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return any(accepts(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str or (isinstance(hint, type) and issubclass(hint, os.PathLike)):
        return isinstance(value, str)
    if hint is dict or origin in (dict, Mapping):
        return isinstance(value, dict)
    if hint in (list, tuple) or origin in (list, tuple, Sequence):
        return isinstance(value, list)
    return True


def describe(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        words = [describe(a) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(words)) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if isinstance(hint, type) and issubclass(hint, os.PathLike):
        return "a path"
    if hint is dict or origin in (dict, Mapping):
        return "a mapping"
    if hint in (list, tuple) or origin in (list, tuple, Sequence):
        return "a list"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))
