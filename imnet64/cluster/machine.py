"""One line naming the machine a figure was measured on: CPU model and vector extensions,
cores, memory, whether TensorFlow's oneDNN kernels are on, TensorFlow's version.

Speed figures depend on the CPU's vector extensions as much as on its cores. TensorFlow 2.18
turns its oneDNN kernels on by default only on x86 CPUs with AVX-512 VNNI/BF16, AVX-VNNI or
AMX (tensorflow/core/util/port.cc, DefaultOneDnnPolicy); on an AVX2-only CPU they were off
and the teacher labeled 2.5x slower. So every figure imnet64 prints (demo summary,
benchmarks) comes with `describe().line()`.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

# The /proc/cpuinfo flags that matter for our figures, in the order they are listed.
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni",
                "amx_tile", "amx_bf16", "amx_int8")
# Any of these makes TensorFlow's oneDNN default "on" on Linux x86 (DefaultOneDnnPolicy).
ONEDNN_DEFAULT_FLAGS = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8",
                        "amx_bf16")
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
# Fast bf16 on a CPU: AVX-512 BF16 (Zen 4, Cooper Lake) or AMX-BF16 (Sapphire Rapids and
# later) dot products. Without them TensorFlow still runs bf16 (converted in software), but
# slower than fp32; on a GPU, compute capability 8.0 (A100) and later have bf16 tensor cores.
FAST_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
MIN_BF16_GPU_CAPABILITY = (8, 0)
# "0": treat this machine as without fast bf16 (tests of the fallback, a suspect CPU);
# "1": as with it. Anything else (or unset): read the hardware.
BF16_ENV = "IMNET64_FAST_BF16"


@dataclass(frozen=True)
class Machine:
    cpu: str  # model name (plus family/model on x86: VMs often show a generic name)
    cores: int  # CPUs this process may run on
    memory_gib: float
    extensions: tuple[str, ...]  # of VECTOR_FLAGS, those the CPU has
    onednn: bool | None  # TensorFlow's oneDNN kernels on (None: cannot tell)
    onednn_why: str  # where that comes from
    tensorflow: str | None  # installed version
    fast_bf16: bool = False  # bf16 is faster than fp32 here (--precision auto picks it)
    bf16_why: str = ""  # the flag, GPU or override that says so
    bf16_on_gpu: bool = False  # a GPU decided fast_bf16 (the model runs there)

    def line(self) -> str:
        """E.g. `AMD EPYC (family 25 model 1), 2 cores, 23.4 GiB, avx2 fma, oneDNN on
        (TF_ENABLE_ONEDNN_OPTS=1; TensorFlow's default on this CPU: off), fast bf16: no
        (no avx512_bf16 or amx_bf16), TensorFlow 2.18.1`."""
        onednn = {True: "on", False: "off", None: "unknown"}[self.onednn]
        return (f"{self.cpu}, {self.cores} cores, {self.memory_gib:g} GiB, "
                f"{' '.join(self.extensions) or 'no AVX2'}, oneDNN {onednn} ({self.onednn_why}), "
                f"fast bf16: {'yes' if self.fast_bf16 else 'no'} ({self.bf16_why}), "
                f"TensorFlow {self.tensorflow or 'not installed'}")

    def as_dict(self) -> dict:
        return {**asdict(self), "extensions": list(self.extensions), "line": self.line()}


def read_cpuinfo() -> str:
    """The text of /proc/cpuinfo, or "" where there is none (not Linux, or unreadable)."""
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def _field(cpuinfo: str, name: str) -> str | None:
    found = re.search(rf"^{re.escape(name)}\s*:\s*(.*)$", cpuinfo, re.M)
    return found.group(1).strip() if found else None


def cpu_model(cpuinfo: str) -> str:
    name = _field(cpuinfo, "model name") or platform.processor() or platform.machine()
    family, model = _field(cpuinfo, "cpu family"), _field(cpuinfo, "model")
    if family and model and model.isdigit():
        return f"{name} (family {family} model {model})"
    return name or "unknown CPU"


def cpu_flags(cpuinfo: str) -> set[str]:
    return set((_field(cpuinfo, "flags") or "").split())


def parse_bool_env(value: str | None) -> bool | None:
    """TensorFlow's reading of a boolean variable (ReadBoolFromEnvVar): 0/false, 1/true in
    any case; anything else (or unset) means the default."""
    if value is None:
        return None
    return {"0": False, "false": False, "1": True, "true": True}.get(value.strip().lower())


def tf_default_onednn(flags: set[str], machine: str | None = None) -> bool | None:
    """TensorFlow 2.18's default for oneDNN on this CPU (Linux wheels)."""
    machine = machine or platform.machine()
    if machine not in ("x86_64", "AMD64"):
        return None  # aarch64: on for Neoverse V1 only, not told by /proc/cpuinfo flags
    return any(f in flags for f in ONEDNN_DEFAULT_FLAGS)


def onednn_state(flags: set[str], env: dict[str, str] | os._Environ = os.environ,
                 ask_tensorflow: bool = True) -> tuple[bool | None, str]:
    """(on?, why). Asks TensorFlow when it is already loaded in this process (it reads the
    setting once, at first use); otherwise predicts it from TF_ENABLE_ONEDNN_OPTS and the
    CPU flags, as TensorFlow will."""
    if ask_tensorflow and "tensorflow" in sys.modules:
        try:
            from tensorflow.python.util import _pywrap_util_port

            return bool(_pywrap_util_port.IsMklEnabled()), _why(flags, env)
        except (ImportError, AttributeError):
            pass
    explicit = parse_bool_env(env.get(ONEDNN_ENV))
    if explicit is not None:
        return explicit, _why(flags, env)
    return tf_default_onednn(flags), _why(flags, env)


def _why(flags: set[str], env) -> str:
    value = env.get(ONEDNN_ENV)
    default = tf_default_onednn(flags)
    default_text = {True: "on", False: "off", None: "unknown"}[default]
    if parse_bool_env(value) is not None:
        return f"{ONEDNN_ENV}={value}; TensorFlow's default on this CPU: {default_text}"
    return "TensorFlow's default on this CPU"


def fast_bf16(flags: set[str], env: dict[str, str] | os._Environ = os.environ,
              gpu_capabilities: tuple[tuple[int, int], ...] = ()) -> tuple[bool, str]:
    """(does this machine compute bf16 faster than fp32?, why), for `--precision auto`.
    A GPU decides when there is one (the model runs there); else the CPU's flags. The
    override BF16_ENV=0/1 wins (tests force the fallback with it on any CPU)."""
    forced = parse_bool_env(env.get(BF16_ENV))
    if forced is not None:
        return forced, f"{BF16_ENV}={env.get(BF16_ENV)}"
    if gpu_capabilities:
        best = max(gpu_capabilities)
        fast = best >= MIN_BF16_GPU_CAPABILITY
        return fast, (f"GPU compute capability {best[0]}.{best[1]}"
                      f"{'' if fast else ' < 8.0'}")
    have = [f for f in FAST_BF16_FLAGS if f in flags]
    if have:
        return True, f"CPU has {' '.join(have)}"
    return False, f"no {' or '.join(FAST_BF16_FLAGS)}"


def gpu_capabilities() -> tuple[tuple[int, int], ...]:
    """Compute capabilities of the GPUs TensorFlow sees, asked only when TensorFlow is already
    loaded (the CLI's --help and the label planning never load it for this)."""
    if "tensorflow" not in sys.modules:
        return ()
    try:
        import tensorflow as tf

        found = []
        for gpu in tf.config.list_physical_devices("GPU"):
            capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
            if capability:
                found.append(tuple(int(v) for v in capability))
        return tuple(found)
    except (AttributeError, RuntimeError, ValueError):
        return ()


def tensorflow_version() -> str | None:
    from importlib import metadata

    for dist in ("tensorflow", "tensorflow-cpu", "tensorflow-intel"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _memory_gib() -> float:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return 0.0


def describe(cpuinfo: str | None = None, env: dict[str, str] | os._Environ = os.environ
             ) -> Machine:
    """This machine (or the one `cpuinfo` describes), as the process sees it now."""
    info = read_cpuinfo() if cpuinfo is None else cpuinfo
    flags = cpu_flags(info)
    onednn, why = onednn_state(flags, env, ask_tensorflow=cpuinfo is None)
    bf16, bf16_why = fast_bf16(flags, env, gpu_capabilities() if cpuinfo is None else ())
    return Machine(cpu=cpu_model(info), cores=_cores(), memory_gib=_memory_gib(),
                   extensions=tuple(f for f in VECTOR_FLAGS if f in flags),
                   onednn=onednn, onednn_why=why, tensorflow=tensorflow_version(),
                   fast_bf16=bf16, bf16_why=bf16_why,
                   bf16_on_gpu=bf16_why.startswith("GPU"))


def machine_line() -> str:
    return describe().line()


if __name__ == "__main__":
    print(machine_line())
