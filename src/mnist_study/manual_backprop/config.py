"""q1's typed configuration: a schema in Hydra's ConfigStore (conf/q1.yaml names it in its defaults
list), and the check that refuses a bad command line, every sweep value included, before any job runs.

Hydra reports a type error (`k=abc`) in several lines, and a value out of range only inside each job of
the sweep; `check_command_line` composes the config of every job first, with Hydra's compose API, and
turns the first problem into one line that names the key, the value and what is allowed.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import MISSING, DictConfig
from omegaconf.errors import OmegaConfBaseException

from mnist_study.errors import UserError, first_line
from mnist_study.manual_backprop.descent import ALLOWED, Settings

CONFIG_NAME = "q1"
SCHEMA_NAME = "q1_schema"


@dataclass
class Q1Config(Settings):
    output_dir: str = MISSING


OPTIONS = [f.name for f in fields(Settings)]  # what a user sets; output_dir is each job's folder


def register() -> None:
    """q1_schema in Hydra's ConfigStore, for conf/q1.yaml's defaults list (q1.py calls this first)."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=Q1Config)


def settings_from(cfg: DictConfig) -> Settings:
    return Settings(**{option.name: cfg[option.name] for option in fields(Settings)})


def check_command_line(overrides: Sequence[str], config_dir: Path) -> list[Settings]:
    """The settings of every job that `overrides` (sweeps expanded) would run; UserError at the first
    bad one."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise UserError(f"cannot parse the command line: {first_line(err)}") from None
    # Each override as the lines (one per sweep value) and parsed values a job may get; hydra.* is Hydra's.
    choices = []
    for override in parsed:
        if override.get_key_element().lstrip("+~") == "hydra.run.dir":
            raise UserError(
                "hydra.run.dir is not where q1.py writes: it always runs as a sweep (one job per K), into "
                "hydra.sweep.dir=<folder>"
            )
        if override.key_or_group.startswith("hydra"):
            continue
        if (key := override.get_key_element().lstrip("+~")) not in OPTIONS and key != "output_dir":
            raise UserError(f"{key} is not an option of q1.py: its options are {', '.join(OPTIONS)}")
        if key == "output_dir":
            raise UserError(
                "output_dir is set by q1.py (each job's folder in hydra.sweep.dir) and cannot be given: choose where "
                "the sweep writes with hydra.sweep.dir=<folder>"
            )
        if override.is_sweep_override():
            lines = [f"{override.get_key_element()}={value}" for value in override.sweep_string_iterator()]
            choices.append(list(zip(lines, override.sweep_iterator(), strict=True)))
        else:
            choices.append([(override.input_line, override.value())])
    jobs = []
    register()
    with initialize_config_dir(config_dir=str(config_dir.resolve()), version_base="1.3"):
        for job in itertools.product(*choices):
            try:
                cfg = compose(CONFIG_NAME, overrides=[line for line, _ in job])
            except HydraException as err:
                values = {line.split("=", 1)[0]: value for line, value in job}
                raise UserError(composition_message(err, values)) from None
            jobs.append(settings_from(cfg))
    return jobs


def composition_message(err: HydraException, values: dict[str, Any]) -> str:
    cause = err.__cause__
    key = getattr(cause, "full_key", None)
    if isinstance(cause, OmegaConfBaseException) and key in ALLOWED and key in values:
        return f"{key} must be {ALLOWED[key]}, got {values[key]!r}"
    return f"{first_line(err)} {first_line(cause)}" if cause is not None else first_line(err)
