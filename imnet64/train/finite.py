"""A diverged run stops instead of reporting success (issue 24, item 5).

Three checks, each cheap next to the work it guards:
- in every training step, `step_is_finite`: the loss and every (already rank-averaged)
  gradient finite. The flag travels in the allreduce that already carries the stop flag, so
  every rank sees the same verdict after the same step and they all stop together;
- before every checkpoint, `variables_are_finite`: a finite step can still push a weight
  to inf (an update of lr x ~1 with an lr near float32's limit), and a checkpoint holding one
  must never replace the last good one;
- at every epoch's end, `absurd_val_loss`: validation's cross-entropy far above what a
  uniform guess scores (ln C) means the weights diverged even if no value overflowed
  (`--lr-max 1e6` gave val_loss 2.8e13); such an epoch must not become "best" nor pass as
  done.

`Diverged` is the one-line error: where (epoch, step), what, and the likely cause.
"""

from __future__ import annotations

import math

from imnet64.errors import UserError

import tensorflow as tf

# A validation loss above ABSURD_FACTOR x ln(classes) counts as diverged: the true class
# then gets probability below C^-100 on average (e^-139 for 4 classes, e^-691 for 1000),
# which only exploding logits produce; an untrained model scores about ln C, a bad but sane
# one a few times that.
ABSURD_FACTOR = 100.0


class Diverged(UserError):
    """Training produced non-finite (or absurd) numbers: the run stops, status.json says
    failed, the last finite checkpoint stays the one to resume from."""

    exit_code = 3  # not 2 (bad input): the options were valid, the run went wrong


def step_is_finite(loss: tf.Tensor, grads, check_grads: bool = True) -> tf.Tensor:
    """A scalar bool tensor (graph-friendly): the loss and, with `check_grads`, every
    gradient finite. fp16's loss scaling expects overflowing gradients now and then (it skips
    those updates and lowers the scale), so it passes check_grads=False."""
    checks = [tf.reduce_all(tf.math.is_finite(loss))]
    if check_grads:
        checks += [tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None]
    return tf.reduce_all(tf.stack(checks))


def variables_are_finite(variables) -> bool:
    """Every floating-point variable holds finite values only (eager, one pass)."""
    floats = [v for v in variables if v.dtype.is_floating]
    if not floats:
        return True
    return bool(tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(v)) for v in floats])))


def absurd_val_loss(val_loss: float, num_classes: int) -> bool:
    """Non-finite, or more than ABSURD_FACTOR x ln(num_classes) (see there). NaN because
    there is no val split is not absurd: pass only a measured loss."""
    return not math.isfinite(val_loss) or val_loss > ABSURD_FACTOR * math.log(max(num_classes, 2))


def likely_cause(lr: float, precision: str) -> str:
    """What to change, for the error line."""
    hints = [f"the learning rate (lr {lr:.3g} at this step: lower --lr-max, or "
             "--warmup-epochs longer)"]
    if precision == "fp16":
        hints.append("the precision (fp16 overflows: try --precision bf16 or fp32)")
    elif precision == "bf16":
        hints.append("the precision (bf16 keeps 8 bits of mantissa: try --precision fp32)")
    return " or ".join(hints)


def diverged(what: str, epoch: int, step: int, lr: float, precision: str,
             checkpoint: str | None) -> Diverged:
    """The error for a divergence seen at (1-based) `epoch`, `step` of the epoch."""
    kept = (f"the last finite checkpoint {checkpoint} is kept" if checkpoint
            else "no checkpoint was written")
    return Diverged(
        f"training diverged at epoch {epoch} step {step}: {what}; likely cause: "
        f"{likely_cause(lr, precision)}; {kept} (a resume must use the same options: start "
        "a new RUN_DIR with the changed ones)")
