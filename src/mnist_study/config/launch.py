"""How a run may be started on a SLURM cluster: checked for every job of a sweep before anything is submitted
(hydra/launcher=slurm), and again by a run that finds itself under SLURM (training.pipeline.check_launch)."""

from __future__ import annotations

from omegaconf import DictConfig

from mnist_study.errors import UserError

# SLURM sends the time-limit signal up to 60 s early, and checks for it only every 30 s or so (sbatch --signal).
MIN_SIGNAL_DELAY_S = 90

SPAWN_UNDER_SLURM = (
    "trainer.strategy=ddp_spawn cannot run under SLURM: every process it spawns takes rank 0 of SLURM's one task; "
    "use trainer=ddp trainer.accelerator=cpu trainer.devices=<n> with hydra.launcher.tasks_per_node=<n>, where "
    "SLURM starts the ranks"
)


def check_slurm_job(cfg: DictConfig, tasks_per_node: int, nodes: int) -> None:
    """One process per SLURM task, each a rank of the run: trainer.devices and trainer.num_nodes must say what
    the launcher's tasks_per_node and nodes ask for (devices left to Lightning, -1 or auto, are checked by it)."""
    trainer = cfg.trainer
    if str(trainer.get("strategy")) == "ddp_spawn":
        raise UserError(SPAWN_UNDER_SLURM)
    devices, num_nodes = trainer.get("devices"), trainer.get("num_nodes", 1)
    if isinstance(devices, int) and devices > 0 and devices != tasks_per_node:
        if tasks_per_node > 1 and devices == 1:
            fix = f"pass trainer=ddp trainer.devices={tasks_per_node} (and trainer.accelerator=cpu without GPUs)"
        else:
            fix = f"pass hydra.launcher.tasks_per_node={devices}"
        raise UserError(
            f"hydra.launcher.tasks_per_node={tasks_per_node} starts that many processes per node, each one rank, "
            f"but trainer.devices={devices}: {fix}"
        )
    if num_nodes != nodes:
        raise UserError(f"hydra.launcher.nodes={nodes} but trainer.num_nodes={num_nodes}: pass the same number to both")


def check_time_limit(timeout_min: int, signal_delay_s: int) -> None:
    """submitit asks SLURM for its signal signal_delay_s before the time limit: a shorter job gets it at the start."""
    if timeout_min * 60 <= signal_delay_s:
        raise UserError(
            f"hydra.launcher.timeout_min={timeout_min} must be longer than hydra.launcher.signal_delay_s="
            f"{signal_delay_s} s, the warning before the time limit (the job would get it as it starts): raise "
            f"timeout_min or lower signal_delay_s (not under {MIN_SIGNAL_DELAY_S}: SLURM may send it 60 s early)"
        )
