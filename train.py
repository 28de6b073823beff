"""Train one network on MNIST: python train.py model=cnn regularizer=bn (see README.md)."""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mnist_study.config.command_line import check_command_line
from mnist_study.runs.ending import RUNNING_FLAGS, refuse_bad_command_line, run_task
from mnist_study.runs.objective import sweeper_value
from mnist_study.runs.signals import run_main

CONFIG_DIR = Path(__file__).resolve().parent / "conf"


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> dict | float | None:
    # Imported here, not above: --help and a bad command line answer before torch and Lightning load (seconds).
    from mnist_study.training.pipeline import train
    from mnist_study.training.upstream import destroy_process_group_at_exit, skip_lightnings_nvml_check_without_gpus

    skip_lightnings_nvml_check_without_gpus()
    destroy_process_group_at_exit()
    return sweeper_value(run_task(train, cfg), cfg.optimized_metric)  # a search's sampler gets one number


def check_every_job(overrides: list[str], config_dir: Path) -> None:
    """Every job's values, then this machine's resources and the folders and checkpoints the jobs would use."""
    multirun = any(arg in RUNNING_FLAGS for arg in sys.argv[1:])

    def check_where_it_runs(cfg: DictConfig, hydra: DictConfig) -> None:
        # Imported once every job's values are good: a bad value answers before torch and Lightning load.
        from mnist_study.training.preflight import check_whole_job

        check_whole_job(cfg, hydra, multirun)

    check_command_line(overrides, config_dir, check_job=check_where_it_runs)


if __name__ == "__main__":
    # submitit (the SLURM launcher) configures logging of its own when imported, which prints each warning three
    # times; told not to, its records go through Hydra's logging (conf/train.yaml) and, in the jobs, to train.log.
    os.environ.setdefault("SUBMITIT_LOG_LEVEL", "NOCONFIG")
    refuse_bad_command_line(sys.argv[1:], check_every_job, CONFIG_DIR)  # every job, before any job runs
    run_main(main)  # a run or sweep stopped by SIGTERM/SIGINT exits with 128 + the signal
