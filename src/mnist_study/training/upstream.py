"""Workarounds for upstream problems that cost this project, each in one named place, called by the entry points."""

from __future__ import annotations

import os

import lightning  # noqa: F401  (sets the variable below on import: import it first, then undo)
import torch


def skip_lightnings_nvml_check_without_gpus() -> None:
    """Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 on import, so that looking for a GPU never initializes
    CUDA (fork safety). While CUDA is uninitialized, torch then loads NVML anew inside every Adam step to
    count the GPUs, a cost that dominates the step of a small network (docs/PERFORMANCE.md). On a machine
    without CUDA devices there is nothing to protect, so the check goes back to torch's default. The processes
    that ddp_spawn starts import Lightning afresh and pay the cost again (trainer=ddp_cpu, a path for tests).
    Upstream: torch could cache the NVML device count; Lightning could set the variable only around its checks."""
    if not torch.cuda.is_available():
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
