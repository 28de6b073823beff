"""Registers train.py's config schemas (mnist_study.schema) in Hydra's ConfigStore wherever Hydra starts.

Hydra imports every module under the `hydra_plugins` namespace when it initializes (this is how launcher
plugins register their configs), so conf/train.yaml composes - through train.py, the compose API or a
notebook - without importing mnist_study first.
"""

import mnist_study.schema  # noqa: F401
