"""`--precision auto`: bf16 where this machine computes it fast, fp32 elsewhere, with the
reason, for `imnet64 train` and `imnet64 label` alike.

bf16 keeps float32's exponent range with an 8-bit mantissa, so (unlike fp16) it needs no
loss scaling. On a CPU with AVX512_BF16 or AMX-BF16, or a GPU of compute capability >= 8.0,
TensorFlow's bf16 kernels run about twice as fast as fp32 (bench/precision.py); elsewhere
bf16 is converted in software and is slower than fp32, so `auto` keeps fp32 there.
"""

from __future__ import annotations

from dataclasses import dataclass

from imnet64.cluster.machine import Machine, describe
from imnet64.errors import UserError

AUTO = "auto"


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str  # what runs: "fp32", "bf16" (train also "fp16")
    requested: str  # what was asked: "auto" or one of the above
    why: str  # one clause: the hardware (or override) behind an auto choice

    def line(self) -> str:
        """E.g. `bf16 (auto: CPU has avx512_bf16)` or `fp32 (as asked)`."""
        return f"{self.precision} ({self.why})"


def choose(requested: str, machine: Machine | None = None, *,
           teacher_pass: bool = False) -> PrecisionChoice:
    """What `requested` means on `machine` (default: this one, as the process sees it).

    `teacher_pass`: bf16 comes from TensorFlow's oneDNN auto mixed precision pass (the
    label teacher), which rewrites CPU kernels only and only with oneDNN on, and is not worth
    it without fast bf16: there auto keeps fp32, and an explicit bf16 is refused with a
    one-line error rather than silently running fp32.
    """
    if requested not in (AUTO, "bf16"):
        return PrecisionChoice(requested, requested, "as asked")
    machine = machine or describe()
    if teacher_pass:
        missing = _teacher_pass_missing(machine)
        if missing and requested == "bf16":
            raise UserError(f"--precision bf16 is not available here: {missing}; "
                            "use --precision fp32 or auto")
        if missing:
            return PrecisionChoice("fp32", AUTO, f"auto: {missing}")
    if requested == "bf16":
        slow = "" if machine.fast_bf16 else f"; slower than fp32 here: {machine.bf16_why}"
        return PrecisionChoice("bf16", "bf16", f"as asked{slow}")
    if machine.fast_bf16 and not machine.bf16_on_gpu and machine.onednn is False:
        # the CPU's bf16 instructions are reached through oneDNN's kernels only: without
        # them TensorFlow converts bf16 in Eigen, slower than fp32
        return PrecisionChoice("fp32", AUTO, f"auto: oneDNN is off ({machine.onednn_why})")
    return PrecisionChoice("bf16" if machine.fast_bf16 else "fp32", AUTO,
                           f"auto: {machine.bf16_why}")


def _teacher_pass_missing(machine: Machine) -> str | None:
    """Why the teacher's bf16 pass cannot run fast here (None: it can)."""
    if machine.bf16_on_gpu:
        return "the teacher's bf16 pass (oneDNN) rewrites CPU kernels only, the GPU would run fp32"
    if not machine.fast_bf16:
        return f"no fast bf16 ({machine.bf16_why})"
    if machine.onednn is False:
        return ("the teacher's bf16 pass needs TensorFlow's oneDNN, which is off "
                f"({machine.onednn_why})")
    return None
