"""`python -m imnet64.cluster.horovodrun ARGS`: Horovod's `horovodrun ARGS`, without TensorFlow's
CUDA-plugin start-up lines.

Before starting the ranks, horovodrun checks that Horovod was built with Gloo/MPI by
importing `horovod.tensorflow` (hence TensorFlow) in a forked child
(horovod.common.util._check_extension_lambda). That child mutes Python's sys.stdout and
sys.stderr, not file descriptor 2, where TensorFlow's C++ prints "Unable to register cuDNN
factory ..." and the like: they reached the demo output and train logs unprefixed, as they
come from the launcher, not from a rank. Running this module imports the imnet64 package
first, which installs its import filter (imnet64.quiet_tf_import); the forked child inherits
it. The ranks import imnet64
themselves (`-m imnet64_cli.main`).
"""

from __future__ import annotations

import sys


def main() -> int:
    from horovod.runner.launch import run_commandline

    sys.argv[0] = "horovodrun"  # its usage and error messages name the command users know
    return run_commandline() or 0


if __name__ == "__main__":
    sys.exit(main())
