"""The options of `imnet64 shard-records` that define its output, their defaults and choice
lists defined once (the CLI reads them from here). Light: no TensorFlow, no image libraries.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from imnet64.errors import UserError

ENCODINGS = ("png", "raw")
# What a record's class is: the teacher's top-1 (pseudo-labels, distillation), or the true
# label the inputs carried (ImageNet64 batch files: the supervised baseline)
LABEL_SOURCES = ("teacher", "truth")


def parse_classes_option(value: str | None) -> int | list[str] | None:
    """`--classes`: a count K, or a comma-separated list of class names."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        k = int(value)
        if k < 1:
            raise UserError("--classes K must be at least 1")
        return k
    names = [n.strip() for n in value.split(",") if n.strip()]
    if len(set(names)) != len(names):
        raise UserError(f"--classes lists a class twice: {value}")
    return names


@dataclass(frozen=True)
class ShardOptions:
    """The options that define the output (they go into the manifest)."""

    val_fraction: float = 0.1
    seed: int = 0
    min_confidence: float | None = None
    classes: int | list[str] | None = None  # K most frequent, or names
    max_per_class: int | None = None
    shard_size_mb: float = 128.0  # MiB
    encoding: str = "png"
    labels: str = "teacher"  # LABEL_SOURCES

    @classmethod
    def build(cls, classes: str | None = None, **kwargs: Any) -> ShardOptions:
        """From CLI-style values (`classes` as "K" or "name,name"), checked."""
        opts = cls(classes=parse_classes_option(classes), **kwargs)
        opts.check()
        return opts

    def check(self) -> None:
        if self.encoding not in ENCODINGS:
            raise UserError(f"--encoding must be {' or '.join(ENCODINGS)}, not {self.encoding!r}")
        if self.labels not in LABEL_SOURCES:
            raise UserError(f"--labels must be {' or '.join(LABEL_SOURCES)}, "
                            f"not {self.labels!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UserError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.min_confidence is not None and not 0.0 <= self.min_confidence <= 1.0:
            raise UserError(f"--min-confidence must be in [0, 1], got {self.min_confidence}")
        if self.max_per_class is not None and self.max_per_class < 1:
            raise UserError(f"--max-per-class must be at least 1, got {self.max_per_class}")
        if not self.shard_size_mb > 0:
            raise UserError(f"--shard-size-mb must be positive, got {self.shard_size_mb}")

    def as_json(self) -> dict[str, Any]:
        return asdict(self)
