"""Classify images with a trained checkpoint: python predict.py ckpt_path=<a .ckpt> images=<file, folder or glob>
(see docs/AFTER-TRAINING.md)."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mnist_study.inference.config import command_line_check, register
from mnist_study.runs.ending import refuse_bad_command_line, run_task
from mnist_study.runs.signals import run_main

CONFIG_DIR = Path(__file__).resolve().parent / "conf"


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> dict | None:
    # Imported here, not above: --help and a bad command line answer before torch and Lightning load (seconds).
    from mnist_study.inference.predict import predict
    from mnist_study.training.upstream import skip_lightnings_nvml_check_without_gpus

    skip_lightnings_nvml_check_without_gpus()
    return run_task(predict, cfg)


if __name__ == "__main__":
    register()  # predict_schema, which conf/predict.yaml's defaults name
    refuse_bad_command_line(sys.argv[1:], command_line_check("predict"), CONFIG_DIR)
    run_main(main)
