"""`trainer.precision=auto`: bf16 mixed precision where the processor computes bf16 natively, fp32 elsewhere.

On a CPU with AVX512-BF16 or AMX-BF16, oneDNN runs the convolutions and matrix products of
`torch.autocast("cpu", dtype=torch.bfloat16)` in bf16 at up to twice the fp32 rate; without them bf16 is
emulated and slower than fp32. docs/PERFORMANCE.md has the measurements behind this choice.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no flags to read, so no claim of native bf16
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def auto_precision(on_gpu: bool, flags: set[str] | None = None) -> tuple[str, str]:
    """(precision, why) for trainer.precision=auto."""
    if on_gpu:
        if torch.cuda.is_bf16_supported():
            return "bf16-mixed", "this GPU computes bf16 natively"
        return "32-true", "this GPU has no native bf16"
    native = sorted(set(NATIVE_BF16_FLAGS) & (cpu_flags() if flags is None else flags))
    if native:
        return "bf16-mixed", f"this CPU computes bf16 natively ({', '.join(native)})"
    return "32-true", "this CPU has no native bf16 (no avx512_bf16 or amx_bf16)"


def resolve_precision(trainer_options: dict) -> str:
    """Replaces precision=auto in Trainer keyword arguments by a concrete precision; returns what and why."""
    if str(trainer_options.get("precision")) != "auto":
        return f"{trainer_options.get('precision')} (as configured)"
    accelerator = str(trainer_options.get("accelerator", "auto"))
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    trainer_options["precision"], why = auto_precision(on_gpu)
    return f"{trainer_options['precision']} (trainer.precision=auto: {why}; trainer.precision=32-true forces fp32)"
