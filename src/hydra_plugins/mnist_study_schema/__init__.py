"""Registers train.py's config schemas and resolvers (mnist_study.config.schema) with Hydra wherever Hydra starts.

Hydra imports every module under the `hydra_plugins` namespace when it initializes (this is how launcher
plugins register their configs), so conf/train.yaml composes - through train.py, the compose API or a
notebook - without importing anything of mnist_study first. (q1's schema needs torch's import, which this
would put in front of every Hydra start: q1.py registers it itself.)
"""

from mnist_study.config.schema import register

register()
