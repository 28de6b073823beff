"""Registers hydra/launcher=slurm (the launcher is in _slurm.py) when hydra-submitit-launcher, which it extends, is
installed (pip install ".[cluster]"). Hydra's plugin scan imports every module here but skips names that start with
an underscore: without the cluster extra the launcher is absent, rather than a module that fails to import, which
Hydra would warn about at every start."""

try:
    from hydra_plugins.mnist_study_launcher._slurm import StudySlurmLauncher  # noqa: F401  (the scan finds it here)
except ModuleNotFoundError as missing:
    if missing.name != "hydra_plugins.hydra_submitit_launcher":
        raise
