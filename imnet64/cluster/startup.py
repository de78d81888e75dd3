"""What every imnet64 process sets before TensorFlow is first imported.

Keras 2 (tf-keras) for TensorFlow: Horovod 0.28.1 only works with Keras 2 variables, and
TF >= 2.16 defaults to Keras 3 unless TF_USE_LEGACY_KERAS=1 is set *before* TensorFlow is
first imported. TensorFlow's oneDNN CPU kernels on unless TF_ENABLE_ONEDNN_OPTS says
otherwise. And the filter of TensorFlow's start-up logs (imnet64.quiet_tf_import).
An explicit setting of any of these variables wins. Ranks, Slurm jobs and containers import
imnet64 (or inherit the environment) too.
"""

from __future__ import annotations

from imnet64 import quiet_tf_import
from imnet64.cluster.environment import Environment, set_default

TENSORFLOW_DEFAULTS = {
    "TF_USE_LEGACY_KERAS": "1",
    # TensorFlow's C++ INFO/WARNING chatter drowns batch logs; users can still lower this.
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # TensorFlow's oneDNN CPU kernels, which TF 2.18 turns on by itself only on x86 CPUs
    # with AVX-512 VNNI/BF16, AVX-VNNI or AMX. With them `label` ran 2.5x and the training
    # step 1.55x as fast on an AVX2-only AMD Zen 3 (issue 13), and 3.5x and 2.1x on an
    # AVX-512 AMD EPYC (bench/onednn.py). Read once, at TensorFlow's first use; 0 turns
    # them off.
    "TF_ENABLE_ONEDNN_OPTS": "1",
}


def prepare() -> None:
    """Set TensorFlow's defaults, then filter its first import (unless the user keeps
    the start-up logs with IMNET64_TF_STARTUP_LOGS=1)."""
    for name, value in TENSORFLOW_DEFAULTS.items():
        set_default(name, value)
    quiet_tf_import.install(keep_logs=Environment.read().tf_startup_logs)
