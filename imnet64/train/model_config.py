"""What decides the encoder's shape, without TensorFlow: the CLI reads the choices and
defaults from here before TensorFlow loads; imnet64.train.model builds the Keras model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tensorflow as tf

ARCHS = ("plain", "residual")


@dataclass(frozen=True)
class ModelConfig:
    """Everything that decides the model's shape. config.json stores all of it but the image
    size, which is the dataset format's (imnet64.formats.image64.SIZE): the caller passes it."""

    num_classes: int
    arch: str = "plain"
    repeats: tuple[int, ...] = (3, 3, 3)
    widths: tuple[int, ...] = (32, 64, 128)
    recompute: bool = False
    image_size: int = field(kw_only=True)  # side of the square RGB input images

    def __post_init__(self) -> None:
        object.__setattr__(self, "repeats", tuple(int(r) for r in self.repeats))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r} (one of {', '.join(ARCHS)})")
        if len(self.repeats) != len(self.widths) or not self.repeats:
            raise ValueError("repeats and widths need the same number (>= 1) of levels")
        if min(self.repeats) < 1 or min(self.widths) < 1 or self.num_classes < 2:
            raise ValueError("repeats and widths must be >= 1 and num_classes >= 2")
        if self.image_size < 1:
            raise ValueError(f"image_size must be >= 1 (got {self.image_size})")

    def to_json(self) -> dict:
        """config.json's "model" (without the image size: see the class docstring)."""
        d = asdict(self)
        del d["image_size"]
        d["repeats"], d["widths"] = list(self.repeats), list(self.widths)
        return d

    @classmethod
    def from_json(cls, d: dict, *, image_size: int) -> ModelConfig:
        keys = ("num_classes", "arch", "repeats", "widths", "recompute")
        return cls(**{k: d[k] for k in keys if k in d}, image_size=image_size)

    def build(self, *, policy: str | None = None, name: str | None = None) -> tf.keras.Model:
        from imnet64.train.model import build  # TensorFlow loads here, not with the config

        return build(self, policy=policy, name=name)
