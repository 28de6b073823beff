"""From a composed config to a trained, tested model: the pipeline, its callbacks, TensorBoard's views, atomic
checkpoints, the precision choice, resuming, and the one upstream workaround."""
