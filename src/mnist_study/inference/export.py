"""`python export.py ckpt_path=... format=onnx|torchscript`: a checkpoint's network as one file another runtime
loads, with a dynamic batch size, checked before it is written: on a batch of the test set (and on batches of
1 and 7 of it) its outputs must equal the checkpoint's to within 1e-5 (ONNX: run with onnxruntime): each logit
to 1e-5 of its size where it is larger than 1 (float32 rounding grows with the number), each class probability
to 1e-5. The file is written whole or not at all.

ONNX goes through torch.onnx.export(dynamo=True), PyTorch's current exporter, which needs onnxscript; onnx,
onnxscript and onnxruntime are the optional extra `export` (pip install -e ".[export]"). TorchScript is
torch.jit.trace of the network in eval mode (PyTorch deprecates TorchScript in favour of torch.export; it is
still what C++ and mobile runtimes of this PyTorch load)."""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from mnist_study.atomic_files import write_atomically
from mnist_study.data.datamodule import MNISTDataModule
from mnist_study.errors import UserError
from mnist_study.inference.checkpoints import TrainedModel, data_settings, load_trained
from mnist_study.inference.config import EXPORT_SUFFIXES, ExportConfig, check_output_file, check_values

log = logging.getLogger(__name__)
TOLERANCE = 1e-5  # |export - checkpoint| <= TOLERANCE * max(1, |checkpoint|) per logit, <= TOLERANCE per probability
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
ADVICE = "Free space there, or pass output=<a path on another disk>"


class ExportMismatch(RuntimeError):
    """The exported network computes other numbers than the checkpoint's: a bug of an exporter, not of the input."""


def test_batch(trained: TrainedModel, cfg: DictConfig) -> Tensor:
    """The first `check_images` images of the test set, normalized as in training."""
    datamodule = MNISTDataModule(**data_settings(trained, OmegaConf.to_container(cfg.data, resolve=True)))
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule.splits["test"][0][: cfg.check_images].cpu()


def require_onnx() -> None:
    missing = []
    for name in ONNX_PACKAGES:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UserError(
            f"format=onnx needs {', '.join(missing)}, not installed: pip install -e '.[export]' "
            f"(or pip install {' '.join(ONNX_PACKAGES)}); format=torchscript needs nothing more"
        )


def onnx_bytes(net: nn.Module, sample: Tensor, opset: int | None) -> bytes:
    batch = torch.export.Dim("batch", min=1)
    for name in ("onnxscript", "onnx_ir"):  # INFO narrates each pass; a failed opset conversion is checked below
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        program = torch.onnx.export(
            net,
            (sample,),
            dynamo=True,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    written = next(entry.version for entry in program.model_proto.opset_import if entry.domain in ("", "ai.onnx"))
    if opset is not None and written != opset:  # the exporter falls back to its own opset when it cannot convert
        raise UserError(
            f"opset={opset}: torch's ONNX exporter could not convert the network to this opset (it fell back to "
            f"{written}); nothing was written: leave opset unset or choose one it converts to, e.g. {written}"
        )
    return program.model_proto.SerializeToString()


def onnx_runner(data: bytes) -> Any:
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: images.numpy()})[0]


def torchscript_bytes(net: nn.Module, sample: Tensor) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice (see the module's docstring)
        traced = torch.jit.trace(net, sample)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    return buffer.getvalue()


def torchscript_runner(data: bytes) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(io.BytesIO(data), map_location="cpu")

    def run(images: Tensor) -> np.ndarray:
        with torch.inference_mode():
            return loaded(images).numpy()

    return run


def differences(run: Any, net: nn.Module, images: Tensor) -> dict[str, Any]:
    """How far `run` (the export) is from `net` on batches of 1, 7 and all `images`: the largest |difference| of a
    logit, of a logit relative to max(1, |logit|), and of a class probability."""
    sizes = sorted({1, min(7, len(images)), len(images)})
    worst = {"logit": 0.0, "relative": 0.0, "probability": 0.0}
    with torch.inference_mode():
        for size in sizes:
            expected = net(images[:size]).double().numpy()
            got = np.asarray(run(images[:size]), dtype=np.float64)
            if got.shape != expected.shape:
                raise ExportMismatch(f"the export gives outputs of shape {got.shape} for {expected.shape}")
            difference = np.abs(got - expected)
            probabilities = np.abs(softmax(got) - softmax(expected))
            worst["logit"] = max(worst["logit"], float(difference.max()))
            worst["relative"] = max(worst["relative"], float((difference / np.maximum(1, np.abs(expected))).max()))
            worst["probability"] = max(worst["probability"], float(probabilities.max()))
    return worst | {"batches": sizes}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def export(cfg: DictConfig) -> dict[str, Any]:
    check_values(cfg, ExportConfig, "")
    if cfg.output is not None:
        check_output_file("output", cfg.output, EXPORT_SUFFIXES[cfg.format], cfg.ckpt_path)
    if cfg.format == "onnx":
        require_onnx()
    trained = load_trained(cfg.ckpt_path)
    images = test_batch(trained, cfg)
    net = trained.classifier.net.eval()
    with torch.inference_mode():
        if not torch.isfinite(net(images)).all():
            raise UserError(
                f"ckpt_path={cfg.ckpt_path} computes NaN or infinite logits on the test images (the weights of a "
                "run that diverged?): nothing was exported"
            )
    sample = images[:2]  # a batch of more than one, so that the batch dimension is not taken for a constant
    if cfg.format == "onnx":
        data = onnx_bytes(net, sample, cfg.opset)
        run = onnx_runner(data)
    else:
        data = torchscript_bytes(net, sample)
        run = torchscript_runner(data)
    found = differences(run, net, images)
    if not (found["relative"] <= TOLERANCE and found["probability"] <= TOLERANCE):
        raise ExportMismatch(
            f"the {cfg.format} export differs from the checkpoint by up to {found['relative']:.3g} of a logit and "
            f"{found['probability']:.3g} in a probability (allowed: {TOLERANCE:g}); nothing was written"
        )
    default = Path(cfg.output_dir) / f"{trained.network}{EXPORT_SUFFIXES[cfg.format][0]}"
    path = Path(cfg.output) if cfg.output else default
    write_atomically(path, data, ADVICE)
    print(
        f"{cfg.format}: {path} ({len(data)} bytes, dynamic batch size); on {len(images)} test images in batches of "
        f"{', '.join(map(str, found['batches']))}, max |difference| from the checkpoint: logits {found['logit']:.1e} "
        f"({found['relative']:.1e} relative), probabilities {found['probability']:.1e} (allowed {TOLERANCE:g})"
    )
    return {"path": str(path), "format": cfg.format, "images": len(images), **found}
