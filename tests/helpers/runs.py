"""Runs made up for the report's statistics, as the sweep reader would return them."""

from __future__ import annotations

from mnist_study.reporting.sweep import Run


def run_of(model: str, regularizer: str, seed: int, acc: float, epochs: int = 30) -> Run:
    return Run(f"{model}-{regularizer}-{seed}", model, regularizer, seed, test_acc=acc, test_loss=0.1, epochs=epochs)
