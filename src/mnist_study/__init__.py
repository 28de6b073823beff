"""Backpropagation by hand and the softmax/MLP/CNN x none/dropout/batch-norm study of MNIST.

Subpackages, each importing only those listed before it, and errors and atomic_files (tests/test_layout.py):
    runs/             run folders: names, locks, stop signals, the files a run holds, how a run ends
    config/           the typed schemas, the checks beyond types, the check of a whole command line
    data/             the MNIST IDX files and the LightningDataModule that serves them
    models/           backbones, dropout, the LightningModule, its metric, optimizers and schedules
    training/         config -> trained, tested model: the pipeline, callbacks, checkpoints, precision, resume
    inference/        after training: evaluate a checkpoint, predict images, export, the browser demo
    reporting/        sweeps read back: report, statistics, figures, tuning, comparison of two sweeps
    manual_backprop/  q1, without Lightning (imports runs only)
"""
