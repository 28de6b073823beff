"""Backpropagation by hand vs torch.autograd: python q1.py k=2,4,8 (see README.md)."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mnist_study.manual_backprop.app import run, stop_record
from mnist_study.manual_backprop.config import check_command_line, register
from mnist_study.runs.ending import refuse_bad_command_line, run_task
from mnist_study.runs.signals import run_main

CONFIG_DIR = Path(__file__).resolve().parent / "conf"


@hydra.main(version_base="1.3", config_path="conf", config_name="q1")
def main(cfg: DictConfig) -> None:
    run_task(run, cfg, describe_stop=stop_record)


if __name__ == "__main__":
    register()  # q1's schema, which conf/q1.yaml's defaults name
    refuse_bad_command_line(sys.argv[1:], check_command_line, CONFIG_DIR)  # every job's options, before any job runs
    run_main(main)  # a sweep stopped by SIGTERM/SIGINT exits with 128 + the signal, after its report
