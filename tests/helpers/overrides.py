"""Command-line overrides that several tests give train.py."""

EXCLUDE_KEYS = (
    "hydra.job.config.override_dirname.exclude_keys=[ckpt_path,data.data_dir,data.checksums,data.download,"
    "trainer.enable_progress_bar,trainer.enable_model_summary,callbacks.pause]"
)
