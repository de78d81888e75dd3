"""The seed's learning-rate schedule: linear warmup, then a quarter cosine to lr_final.

A pure function of the (possibly fractional) epoch t. With E_w warmup epochs, E_f epochs
after warmup, lr_init = lr_max * init_scale and lr_final = lr_max * final_scale:

    t <  E_w:  lr = (lr_max - lr_init) * (t / E_w) + lr_init
    t >= E_w:  lr = (lr_max - lr_final) * max(0, cos(((t - E_w) / (E_f - 1)) * pi/2)) + lr_final

The cosine argument reaches pi/2 at t = E_w + E_f - 1, the last epoch: a quarter cosine that
ends at lr_final, not a half cosine. The trainer applies it every step with
t = global_step / steps_per_epoch, so at each epoch boundary it equals the seed's per-epoch
value (the seed's Keras callback set it once per epoch).

Learning-rate scaling with workers: with N Horovod ranks the global batch is N times
larger, so lr_max (and with it lr_init and lr_final) is multiplied by N (the linear scaling
rule of Goyal et al. 2017, which the warmup exists to make safe); `--no-lr-scaling` keeps it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Schedule:
    """The seed's defaults: Adam lr_max 1e-3, scales 0.01, 5 warmup + 25 epochs (30 in all)."""

    lr_max: float = 1e-3
    init_scale: float = 0.01
    final_scale: float = 0.01
    warmup_epochs: float = 5.0
    final_epochs: float = 25.0

    def __post_init__(self) -> None:
        if self.lr_max <= 0:
            raise ValueError("lr_max must be > 0")
        if self.warmup_epochs < 0:
            raise ValueError("warmup_epochs must be >= 0")
        if self.final_epochs < 1:
            raise ValueError("final_epochs (epochs after warmup) must be >= 1")

    @property
    def lr_init(self) -> float:
        return self.lr_max * self.init_scale

    @property
    def lr_final(self) -> float:
        return self.lr_max * self.final_scale

    @property
    def total_epochs(self) -> float:
        return self.warmup_epochs + self.final_epochs

    def scaled(self, factor: float) -> Schedule:
        """The same schedule with every learning rate multiplied by `factor` (workers)."""
        return Schedule(self.lr_max * factor, self.init_scale, self.final_scale,
                        self.warmup_epochs, self.final_epochs)

    def __call__(self, epoch: float) -> float:
        return lr_at(epoch, self)

    def at_step(self, step: int, steps_per_epoch: int) -> float:
        return lr_at(step / steps_per_epoch, self)

    def to_json(self) -> dict:
        return asdict(self)


def lr_at(t: float, s: Schedule) -> float:
    """Learning rate at fractional epoch `t` (see the module docstring)."""
    t = float(t)
    if t < s.warmup_epochs:
        return (s.lr_max - s.lr_init) * (t / s.warmup_epochs) + s.lr_init
    # E_f == 1 divides by zero in the seed's formula; we then decay over that one epoch
    # (lr_max at its start, lr_final at its end). For E_f > 1 this is the seed's formula.
    span = s.final_epochs - 1.0 if s.final_epochs > 1 else 1.0
    cosine = max(0.0, math.cos(((t - s.warmup_epochs) / span) * (math.pi / 2.0)))
    return (s.lr_max - s.lr_final) * cosine + s.lr_final
