"""Benchmarks of the project, not installed with it: run them from the repository root
(python -m benchmarks.epoch_times, or make bench)."""
