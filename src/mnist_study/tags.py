"""Names that the runs write and the report reads: TensorBoard tags and file names (no torch import: `report.py`
starts fast)."""

EPOCH_SECONDS, IMAGES_PER_SECOND = "train/epoch_s", "train/images_per_s"  # logged by callbacks.EpochTimer
RESULT_FILE = "result.json"  # in a run's folder, written when the run has finished and been tested
# The tested checkpoint's figures (error_analysis.ErrorAnalysis): <name>.png in the run's folder, val_best/<name>.
CONFUSION, MISTAKES = "confusion_matrix", "misclassified"
