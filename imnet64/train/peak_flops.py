"""The machine's peak FLOP/s, for the MFU figure in training logs (as nanoGPT shows it).

MFU = images/s x 3 x (forward FLOPs per image) / peak FLOP/s of all ranks; the 3 is the
usual forward + two backward products per layer. The peak is `--peak-flops` when given
(per rank), else an estimate:
- GPU: a table of dense tensor-core peaks (bf16/fp16) and plain fp32 peaks per model, from
  the vendors' data sheets; an unknown GPU gives no MFU.
- CPU: cores x clock x FLOPs per cycle per core from the vector units in /proc/cpuinfo
  (AVX-512 with 2 FMA units: 64 fp32 FLOPs/cycle; AVX2+FMA: 32; otherwise 8), cores being
  the CPUs this process may run on, clock the highest "cpu MHz" listed. That is the nominal
  clock: a CPU that boosts above it (as this VM's does: 2596 MHz listed, training measured at
  up to ~105% of that peak) shows an MFU over 100%. Pass --peak-flops for a known peak.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# name fragment -> (fp32 FLOP/s, bf16/fp16 tensor-core FLOP/s), dense, per GPU
GPU_PEAKS: dict[str, tuple[float, float]] = {
    "H100": (67e12, 989e12),
    "A100": (19.5e12, 312e12),
    "A10": (31.2e12, 125e12),
    "L40": (90.5e12, 181e12),
    "L4": (30.3e12, 121e12),
    "V100": (15.7e12, 125e12),
    "T4": (8.1e12, 65e12),
    "RTX 4090": (82.6e12, 165e12),
    "RTX 3090": (35.6e12, 71e12),
}


@dataclass(frozen=True)
class Peak:
    flops_per_s: float | None  # per rank; None if unknown
    source: str  # how it was obtained, for the logs


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_peak(cpuinfo: str | None = None, cores: int | None = None) -> Peak:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    found = re.search(r"^flags\s*:\s*(.*)$", cpuinfo, re.M)
    flags = set(found.group(1).split()) if found else set()
    mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, re.M)]
    if not mhz:
        return Peak(None, "cpu clock unknown")
    per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 8
    cores = cores or _cpu_count()
    peak = cores * max(mhz) * 1e6 * per_cycle
    return Peak(peak, f"estimate: {cores} cores x {max(mhz):.0f} MHz x {per_cycle} FLOP/cycle")


def gpu_peak(device_name: str, precision: str) -> Peak:
    for fragment, (fp32, half) in GPU_PEAKS.items():
        if fragment.lower() in device_name.lower():
            value = fp32 if precision == "fp32" else half
            return Peak(value, f"data sheet: {fragment} {precision}")
    return Peak(None, f"unknown GPU {device_name!r} (pass --peak-flops)")


def peak_per_rank(precision: str, override: float | None = None, local_size: int = 1) -> Peak:
    """One rank's peak; CPU ranks sharing a host share its cores (`local_size` of them)."""
    if override:
        return Peak(float(override), "--peak-flops")
    import tensorflow as tf

    gpus = tf.config.get_visible_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return gpu_peak(details.get("device_name", "GPU"), precision)
    host = cpu_peak()
    if host.flops_per_s is None or local_size <= 1:
        return host
    return Peak(host.flops_per_s / local_size, f"{host.source}, shared by {local_size} ranks")


def mfu(images_per_s: float, flops_per_image: int, peak_total: float | None) -> float | None:
    """Achieved fraction of peak: training costs ~3x the forward FLOPs per image."""
    if not peak_total:
        return None
    return images_per_s * 3.0 * flops_per_image / peak_total
