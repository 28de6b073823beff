"""`python eval.py ckpt_path=...`: a checkpoint's network on the test (or its run's validation) split, with the
pieces training tests it with: the run's data settings and precision, Trainer.test and the ErrorAnalysis callback.
On the test split of the run's best checkpoint the numbers are those of the run's result.json."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from mnist_study.atomic_files import write_json_atomically
from mnist_study.data.datamodule import MNISTDataModule, TensorBatches
from mnist_study.inference.checkpoints import TrainedModel, data_settings, load_trained
from mnist_study.inference.config import EvalConfig, check_values
from mnist_study.training.error_analysis import ErrorAnalysis
from mnist_study.training.pipeline import quiet_lightning
from mnist_study.training.precision import resolve_precision
from mnist_study.training.preflight import lightning_refusals

log = logging.getLogger(__name__)
EVAL_FILE = "eval.json"
ADVICE = "Free space there, or pass hydra.run.dir=<a folder on a bigger disk>"


class SplitUnderTest(MNISTDataModule):
    """MNISTDataModule whose test loop reads `split`: the test set, or the run's validation split."""

    def __init__(self, split: str, **settings: Any) -> None:
        super().__init__(**settings)
        self.split = split

    def test_dataloader(self) -> TensorBatches:
        return self.eval_dataloader(self.split)


def run_precision(trained: TrainedModel, accelerator: str) -> str:
    """The precision the run tested with (result.json), else its configured one resolved as train.py does."""
    if precision := trained.run_result().get("precision"):
        return str(precision)
    run = trained.run_config()
    configured = OmegaConf.select(run, "trainer.precision", default="auto") if run is not None else "auto"
    options = {"precision": configured, "accelerator": accelerator}
    resolve_precision(options, trained.classifier.net)
    return str(options["precision"])


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    check_values(cfg, EvalConfig, "")
    quiet_lightning()
    trained = load_trained(cfg.ckpt_path)
    split, output_dir = cfg.split, Path(cfg.output_dir)
    run = trained.run_config()
    # The run's weight layout: with other kernels bf16 logits may differ in the last bit (it is speed only otherwise).
    trained.classifier.channels_last = bool(OmegaConf.select(run, "channels_last", default=False)) if run else False
    trainer_options = OmegaConf.to_container(cfg.trainer, resolve=True)
    if trainer_options["precision"] is None:
        trainer_options["precision"] = run_precision(trained, trainer_options["accelerator"])
    log.info("precision: %s", resolve_precision(trainer_options, trained.classifier.net))
    if trainer_options.get("enable_progress_bar") is None:
        trainer_options["enable_progress_bar"] = sys.stderr.isatty()
    analysis = ErrorAnalysis(split=split)
    with lightning_refusals():  # trainer.accelerator=gpu without one, a precision Lightning does not know: one line
        trainer = L.Trainer(
            **trainer_options,
            logger=False,
            callbacks=[analysis],
            enable_checkpointing=False,
            enable_model_summary=False,
            default_root_dir=str(output_dir),  # ErrorAnalysis saves confusion_matrix.png and misclassified.png here
        )
    datamodule = SplitUnderTest(split, **data_settings(trained, OmegaConf.to_container(cfg.data, resolve=True)))
    trainer.test(trained.classifier, datamodule=datamodule, verbose=False)
    metrics = {key.replace("test/", f"{split}/"): float(v) for key, v in trainer.callback_metrics.items()}
    result = {
        "checkpoint": str(trained.path),
        "split": split,
        "images": int(sum(sum(row) for row in analysis.confusion_matrix)),
        f"{split}/acc": metrics[f"{split}/acc"],
        f"{split}/loss": metrics[f"{split}/loss"],
        "per_class_acc": analysis.per_class_acc,
        "confusion_matrix": analysis.confusion_matrix,
        "model": trained.options["model"]["name"],
        "regularizer": trained.options["regularizer"]["name"],
        "precision": str(trainer.precision),
        "data": data_summary(datamodule),
    }
    if trainer.is_global_zero:
        write_json_atomically(output_dir / EVAL_FILE, result, ADVICE)
        print(summary(result, output_dir / EVAL_FILE))
    return result


def data_summary(datamodule: MNISTDataModule) -> dict[str, Any]:
    """The data settings that decide which images were evaluated."""
    return {"data_dir": str(datamodule.data_dir), "val_size": datamodule.val_size, "split_seed": datamodule.split_seed}


def summary(result: dict[str, Any], path: Path) -> str:
    """What eval.py prints: the split's accuracy and loss, per-class accuracy and the confusion matrix."""
    split = result["split"]
    lines = [
        f"{split}/acc={result[f'{split}/acc']:.4f} {split}/loss={result[f'{split}/loss']:.4f} "
        f"on {result['images']} {split} images, {result['model']}-{result['regularizer']}, {result['precision']}",
        "per-class accuracy: " + "  ".join(f"{k}: {acc:.4f}" for k, acc in enumerate(result["per_class_acc"])),
        "confusion matrix (rows: true class, columns: predicted class):",
    ]
    matrix = result["confusion_matrix"]
    width = max(len(str(count)) for row in matrix for count in row) + 1
    lines.append("     " + "".join(f"{k:>{width}}" for k in range(len(matrix))))
    lines += [f"  {k:>2} " + "".join(f"{count:>{width}}" for count in row) for k, row in enumerate(matrix)]
    lines.append(f"written to {path}")
    return "\n".join(lines)
