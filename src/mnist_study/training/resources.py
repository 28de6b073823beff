"""What this machine can run, checked before any process starts or any tensor is allocated: processes against
CPU cores, devices against the GPUs present, a network's size against memory. Each refusal is one UserError.

Lightning starts `trainer.devices` processes per node when `fit` begins (re-running the command line, or
spawning); on the CPU each wants a core and its own copy of the data and network, so more processes than
cores stall the machine rather than speed anything up. `oversubscribe=true` runs them anyway.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from lightning.fabric.plugins.environments import TorchElasticEnvironment
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.accelerators import AcceleratorRegistry, CUDAAccelerator, MPSAccelerator
from omegaconf import DictConfig
from torch import nn

from mnist_study.config import as_dict
from mnist_study.errors import UserError, first_line
from mnist_study.models.classifier import MNISTClassifier

log = logging.getLogger(__name__)

BYTES_PER_VALUE = 4  # fp32 weights, gradients, optimizer moments and activations (bf16 autocast keeps fp32 weights)
GB = 1e9


def cpu_cores() -> int:
    """The cores this process may run on (its affinity: taskset, a SLURM or container cpuset), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def started_by_a_launcher() -> bool:
    """Whether SLURM's srun or torchrun started this process as one rank: Lightning then starts no process. (SLURM
    by the rule SLURMEnvironment.detect documents, without its warning when srun is installed but not used.)"""
    under_srun = "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")
    return under_srun or TorchElasticEnvironment.detect()


def resolved_accelerator(name: str) -> str:
    """trainer.accelerator as Lightning will resolve it: auto is the first present of cuda, mps, cpu; gpu is
    cuda or mps."""
    if name == "auto":
        return next((n for n, a in (("cuda", CUDAAccelerator), ("mps", MPSAccelerator)) if a.is_available()), "cpu")
    if name == "gpu":
        return "mps" if MPSAccelerator.is_available() and not CUDAAccelerator.is_available() else "cuda"
    return name


def check_processes(trainer: Mapping[str, Any], oversubscribe: bool) -> None:
    """trainer.accelerator present here; trainer.devices within the GPUs present, or on the CPU no more
    processes than cores unless `oversubscribe`."""
    asked = str(trainer.get("accelerator", "auto"))
    name = resolved_accelerator(asked)
    if name not in AcceleratorRegistry:
        return  # refused by the config check already
    accelerator = AcceleratorRegistry[name]["accelerator"]
    if not accelerator.is_available():
        what = "no GPU" if asked in ("gpu", "cuda", "mps") else f"no {name} device"
        raise UserError(
            f"trainer.accelerator={asked}: this machine has {what} that torch can use: use trainer.accelerator=cpu "
            "(or auto, which takes what is present)"
        )
    devices = trainer.get("devices", "auto")
    if devices == "auto":
        return  # one CPU process, or every GPU
    if name != "cpu":
        try:
            accelerator.parse_devices(devices)
        except (MisconfigurationException, ValueError, TypeError) as err:
            count = accelerator.auto_device_count()
            raise UserError(
                f"trainer.devices={devices}: this machine has {count} {name} device(s) ({first_line(err)}): ask for "
                f"at most {count}, or -1 for all of them"
            ) from None
        return
    if started_by_a_launcher():  # srun or torchrun started this rank; the cores per rank are theirs to allot
        return
    if isinstance(devices, bool) or not str(devices).isdigit() or int(devices) < 1:
        raise UserError(
            f"trainer.devices={devices} on the CPU: give the number of processes, a positive integer (e.g. "
            "trainer.devices=2); -1 and lists of indices name GPUs"
        )
    processes, cores = int(devices), cpu_cores()
    if processes > cores and not oversubscribe:
        raise UserError(
            f"trainer.devices={processes} would start {processes} training processes on this machine's {cores} CPU "
            f"core(s): use trainer.devices={cores} or fewer, or add oversubscribe=true to start them anyway"
        )


def training_bytes(cfg: DictConfig) -> tuple[int, int]:
    """(parameters, bytes) a training step of the configured network needs: the weights, their gradients and the
    optimizer's state per parameter, plus the activations of one batch kept for the backward pass. Measured on
    torch's meta device: nothing is allocated."""
    with torch.device("meta"):
        classifier = MNISTClassifier(
            model=as_dict(cfg, "model"), regularizer=as_dict(cfg, "regularizer"), optimizer=as_dict(cfg, "optimizer")
        )
    net = classifier.net
    parameters = classifier.num_parameters
    optimizer = as_dict(cfg, "optimizer")
    moments = 2 if optimizer["name"] in ("adam", "adamw") else int(bool(optimizer.get("momentum")))
    activations = activation_values(net, int(cfg.data.batch_size))
    return parameters, BYTES_PER_VALUE * (parameters * (2 + moments) + 2 * activations)


def activation_values(net: nn.Module, batch_size: int) -> int:
    """How many values the layers of `net` output for a batch (what autograd keeps for the backward pass)."""
    counted: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: counted.append(out.numel())) for m in net]
    try:
        with torch.no_grad():
            net(torch.zeros(batch_size, 1, 28, 28, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return sum(counted)


def memory_bytes(device: str) -> tuple[int, int]:
    """(total, available now) memory of the device that trains."""
    if device == "cuda":
        free, total = torch.cuda.mem_get_info()
        return total, free
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return total, int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return total, total


def check_memory(cfg: DictConfig) -> None:
    """A network whose training cannot fit in the device's memory is refused before anything is allocated; one
    that fits only in memory that is in use now is warned about."""
    parameters, needed = training_bytes(cfg)
    device = "cuda" if resolved_accelerator(str(cfg.trainer.accelerator)) == "cuda" else "cpu"
    total, available = memory_bytes(device)
    what = (
        f"model={cfg.model.name} with these sizes has {parameters:,} parameters; training it with "
        f"optimizer={cfg.optimizer.name} and data.batch_size={cfg.data.batch_size} needs about {needed / GB:.3g} GB"
    )
    if needed > total:
        raise UserError(f"{what}, more than this {device}'s {total / GB:.3g} GB of memory: choose smaller sizes")
    if needed > available:
        free = f"{available / GB:.3g} GB of this {device}'s memory are free now"
        log.warning("%s; %s: the run may fail for lack of memory", what, free)
