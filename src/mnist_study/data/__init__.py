"""MNIST: the four official IDX files, checked and found offline (mnist_files), served as tensors (datamodule)."""
