"""TensorBoard tags that the runs write and the report reads (no torch import: `report.py` starts fast)."""

EPOCH_SECONDS, IMAGES_PER_SECOND = "train/epoch_s", "train/images_per_s"  # logged by callbacks.EpochTimer
