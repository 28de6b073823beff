"""What a job returns to Hydra's sweeper: its result, or, in a search (hparams_search=...), the one number the
sampler optimizes."""

from __future__ import annotations

import logging
from typing import Any

from mnist_study.runs.signals import stop_guard

log = logging.getLogger(__name__)


def sweeper_value(result: dict[str, Any] | None, optimized_metric: str | None) -> dict[str, Any] | float | None:
    """`result` as it is when nothing is optimized; else its `optimized_metric` (a validation number: the config
    allows no test one). None for a run that failed or has no such number: the sweeper then marks the trial
    failed and asks for the next."""
    if optimized_metric is None:
        return result
    if (code := stop_guard().exit_code) is not None:
        # A search stopped by SIGTERM/SIGINT ends here, its trial left unfinished in the study (a continued search
        # leaves it aside), rather than the sweeper asking for every remaining trial and each failing unstarted.
        raise SystemExit(code)
    if result is None:
        return None
    value = result.get(optimized_metric)
    if value is None:
        log.warning("the result has no %s (not known after ddp_spawn): the trial counts as failed", optimized_metric)
        return None
    return float(value)
