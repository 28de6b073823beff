"""The project's Hydra launchers (hydra/launcher=slurm): found by Hydra's plugin scan, like mnist_study_schema."""
