"""The training engines: who runs the collectives between ranks (`imnet64 train --engine`,
IMNET64_ENGINE in slurm/train.sh). Horovod is the default; tf is TensorFlow's own
tf.distribute (imnet64.cluster.tf_world), for stacks without Horovod."""

from __future__ import annotations

from importlib.util import find_spec

from imnet64.errors import UserError

ENGINES = ("horovod", "tf")
# how summaries and logs name them
ENGINE_NAMES = {"horovod": "Horovod", "tf": "tf.distribute"}


def check_engine(option: str, value: str) -> str:
    """`value` if it names an engine, else a one-line error naming `option`."""
    if value not in ENGINES:
        raise UserError(f"{option} {value!r}: choose {' or '.join(ENGINES)}")
    return value


def importable_engines() -> tuple[str, ...]:
    """The engines this install has, cheaply (for --help; `imnet64 doctor` also checks how
    Horovod was built): tf always (TensorFlow is a requirement), horovod when it is installed
    (the pinned stack; the current stack has none)."""
    return tuple(e for e in ENGINES if e != "horovod" or find_spec("horovod") is not None)
