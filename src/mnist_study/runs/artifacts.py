"""What a run folder holds, by name: the files runs write and the report reads, and the metric tags they share.
(No torch import: report.py starts fast.)"""

RESULT_FILE = "result.json"  # written when the run has finished and been tested
FAILURE_FILE = "failed.txt"  # a failed or stopped run's error, read by the report
OTHER_RANKS_FAILURE_FILES = "failed.rank*.txt"  # the other ranks' of a DDP run (failure_file), beside rank 0's
LOCK_FILE = "run.lock"  # held by the live process that trains in the folder (runs.locks)
EPOCH_SECONDS, IMAGES_PER_SECOND = "train/epoch_s", "train/images_per_s"  # logged by callbacks.EpochTimer
# One row per finished epoch, whatever the loggers (training.epochs_file.EpochsFile); the report's curves.
EPOCHS_FILE = "epochs.csv"
LEARNING_RATE = "train/lr"  # the rate at the epoch's end (LearningRateMonitor logs it per step, to the loggers)
EPOCH_COLUMNS = (
    "train/acc",
    "train/loss",
    "val/acc",
    "val/loss",
    "test_epoch/acc",
    "test_epoch/loss",
    EPOCH_SECONDS,
    IMAGES_PER_SECOND,
    LEARNING_RATE,
)
# The tested checkpoint's figures (error_analysis.ErrorAnalysis): <name>.png in the run's folder, val_best/<name>.
CONFUSION, MISTAKES = "confusion_matrix", "misclassified"


def failure_file(rank: int = 0) -> str:
    """Where a run's process of global rank `rank` records its failure: each rank of a DDP run its own file."""
    return FAILURE_FILE if rank == 0 else f"failed.rank{rank}.txt"
