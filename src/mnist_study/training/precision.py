"""`trainer.precision=auto`: bf16 mixed precision where it pays, fp32 elsewhere.

On a CPU with AVX512-BF16 or AMX-BF16, oneDNN runs the convolutions and matrix products of
`torch.autocast("cpu", dtype=torch.bfloat16)` in bf16 at up to twice the fp32 rate; without them bf16 is
emulated and slower than fp32. Autocast also costs a cast of every weight and activation it touches, so a network
whose products are small (softmax regression, a narrow MLP) is slower in bf16 even where the CPU has it: `auto`
picks bf16 on the CPU only from BF16_MIN_FLOPS_PER_IMAGE, the threshold measured in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
BF16_MIN_FLOPS_PER_IMAGE = 300_000  # forward pass, one 28x28 image: from about here bf16 trains faster on the CPU


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


def forward_flops_per_image(network: nn.Module) -> int:
    """The floating-point operations of `network`'s forward pass for one MNIST image (matrix products and
    convolutions, as torch's FlopCounterMode counts them)."""
    image = torch.zeros(1, 1, 28, 28, device=next(network.parameters()).device)
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            network(image)
    finally:
        network.train(was_training)
    return counter.get_total_flops()


def auto_precision(on_gpu: bool, flags: set[str] | None = None, flops_per_image: int | None = None) -> tuple[str, str]:
    """(precision, why) for trainer.precision=auto; `flops_per_image` None: a network large enough for bf16."""
    if on_gpu:
        if torch.cuda.is_bf16_supported():
            return "bf16-mixed", "this GPU computes bf16 natively"
        return "32-true", "this GPU has no native bf16"
    native = sorted(set(NATIVE_BF16_FLAGS) & (cpu_flags() if flags is None else flags))
    if not native:
        return "32-true", "this CPU has no native bf16 (no avx512_bf16 or amx_bf16)"
    if flops_per_image is not None and flops_per_image < BF16_MIN_FLOPS_PER_IMAGE:
        return "32-true", (
            f"this CPU computes bf16 natively ({', '.join(native)}), but the network is too small to gain from it: "
            f"{flops_per_image / 1e6:.2g} MFLOP per image, bf16 pays from {BF16_MIN_FLOPS_PER_IMAGE / 1e6:.2g}"
        )
    size = "" if flops_per_image is None else f", {flops_per_image / 1e6:.2g} MFLOP per image"
    return "bf16-mixed", f"this CPU computes bf16 natively ({', '.join(native)}{size})"


def resolve_precision(trainer_options: dict, network: nn.Module | None = None) -> str:
    """Replaces precision=auto in Trainer keyword arguments by a concrete precision for `network`; returns what and
    why."""
    if str(trainer_options.get("precision")) != "auto":
        return f"{trainer_options.get('precision')} (as configured)"
    accelerator = str(trainer_options.get("accelerator", "auto"))
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    flops = forward_flops_per_image(network) if network is not None else None
    trainer_options["precision"], why = auto_precision(on_gpu, flops_per_image=flops)
    return f"{trainer_options['precision']} (trainer.precision=auto: {why}; trainer.precision=32-true forces fp32)"
