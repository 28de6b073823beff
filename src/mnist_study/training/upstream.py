"""Workarounds for upstream problems that cost this project, each in one named place, called by the entry points."""

from __future__ import annotations

import atexit
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


def destroy_process_group_at_exit() -> None:
    """Lightning destroys the process group at interpreter exit only for NCCL. A gloo group (DDP on CPUs, as
    torchrun and SLURM start it here) is left to the interpreter's finalization, where its worker threads can
    abort the process ("terminate called without an active exception", SIGABRT, pytorch/pytorch#190489) after
    the run has finished and saved everything; torchrun then reports the rank as failed and the other node's
    agent waits out its exit barrier. Destroying the group while the interpreter is alive is what torch asks
    (https://pytorch.org/docs/stable/distributed.html#shutdown). Registered once per process, whatever the
    number of jobs. Upstream: Lightning could register its exit handler for every backend."""
    atexit.unregister(destroy_process_group_if_initialized)
    atexit.register(destroy_process_group_if_initialized)


def destroy_process_group_if_initialized() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
