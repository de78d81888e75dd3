"""imnet64: pseudo-label 64x64 ImageNet with a pretrained teacher, shard it, train on it.

Importing this package selects Keras 2 (tf-keras) for TensorFlow: Horovod 0.28.1 only works
with Keras 2 variables, and TF >= 2.16 defaults to Keras 3 unless TF_USE_LEGACY_KERAS=1 is set
*before* TensorFlow is first imported. Every entry point imports this package first.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ INFO/WARNING chatter drowns batch logs; users can still lower this.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

from imnet64 import quiet_tf_import as _quiet_tf_import  # noqa: E402  (after the env above)

_quiet_tf_import.install()
