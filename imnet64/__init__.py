"""imnet64: pseudo-label 64x64 ImageNet with a pretrained teacher, shard it, train on it.

Importing this package prepares the process for TensorFlow before anything imports it
(imnet64.cluster.startup: Keras 2 for Horovod, oneDNN kernels, TF's start-up log filter).
Every entry point imports this package first.
"""

from imnet64.cluster import startup as _startup

__version__ = "0.1.0"

_startup.prepare()
