"""Tools for maintainers (not installed with the package): TensorBoard screenshots, a local SLURM cluster."""
