"""imnet64: pseudo-label 64x64 ImageNet with a pretrained teacher, shard it, train on it.

Importing this package selects Keras 2 (tf-keras) for TensorFlow: Horovod 0.28.1 only works
with Keras 2 variables, and TF >= 2.16 defaults to Keras 3 unless TF_USE_LEGACY_KERAS=1 is set
*before* TensorFlow is first imported. It also turns TensorFlow's oneDNN CPU kernels on
unless TF_ENABLE_ONEDNN_OPTS says otherwise. Every entry point imports this package first.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ INFO/WARNING chatter drowns batch logs; users can still lower this.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's oneDNN CPU kernels, which TF 2.18 turns on by itself only on x86 CPUs with
# AVX-512 VNNI/BF16, AVX-VNNI or AMX. With them `label` ran 2.5x and the training step 1.55x
# as fast on an AVX2-only AMD Zen 3 (issue 13), and 3.5x and 2.1x on an AVX-512 AMD EPYC
# (bench/onednn.py). Read once, at TensorFlow's first use; an explicit setting (0 to turn
# them off) wins. Ranks, Slurm jobs and containers import this package (or inherit the
# environment) too.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"

from imnet64 import quiet_tf_import as _quiet_tf_import  # noqa: E402  (after the env above)

_quiet_tf_import.install()
