"""How the entry points fail: one line for a user's mistake, a recorded failure inside a sweep."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mnist_study.errors import UserError

FAILURE_FILE = "failed.txt"  # in a sweep job's directory: the job's error, read by the report
log = logging.getLogger(__name__)
T = TypeVar("T")


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_task(task: Callable[[DictConfig], T], cfg: DictConfig) -> T | None:
    """Run a Hydra task. A single run turns a user error into `error: ...` and exit code 1 (the full
    trace with HYDRA_FULL_ERROR=1); a sweep job records any failure in its directory and returns None,
    so the other jobs still run and the report can list it."""
    try:
        return task(cfg)
    except Exception as err:
        if in_multirun():
            output_dir = Path(HydraConfig.get().runtime.output_dir)
            output_dir.mkdir(parents=True, exist_ok=True)
            message = one_line(err)
            (output_dir / FAILURE_FILE).write_text(message + "\n\n" + traceback.format_exc())
            log.error("job %s failed: %s", HydraConfig.get().job.override_dirname, message)
            return None
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or not isinstance(err, UserError):
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        raise SystemExit(1) from None


def one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    first = lines[0] if lines else ""
    return first if isinstance(err, UserError) and first else f"{type(err).__name__}: {first}"
