"""Doctor's Horovod and TensorFlow section: what is installed and how it was built, the
controller hvd.init() would pick, the world it joins (--probe: in a child process), the
machine, oneDNN, XLA and what `--precision auto` picks, and the engines `train` can use."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from imnet64.cluster.environment import Environment
from imnet64.cluster.launcher_layout import horovod_controller
from imnet64.errors import one_line
from imnet64.pipeline.doctor.report import HorovodBuild, TensorFlowInfo

PROBE_TIMEOUT_S = 180.0


def read_horovod(env: Mapping[str, str], quick: bool) -> HorovodBuild:
    """Horovod's version and build (MPI, Gloo, NCCL) and its controller here; `quick`: the
    version only (no import)."""
    from importlib import metadata

    try:
        version = metadata.version("horovod")
    except metadata.PackageNotFoundError:
        return HorovodBuild(None, False, controller=None,
                            controller_why="Horovod is not installed: one process only")
    build = HorovodBuild(version, False)
    if quick:
        return build
    try:
        import horovod.tensorflow as hvd

        build.imported = True
        build.mpi, build.gloo, build.nccl = (bool(hvd.mpi_built()), bool(hvd.gloo_built()),
                                             bool(hvd.nccl_built()))
    except Exception as e:  # noqa: BLE001  (a broken build must be reported, not raised)
        build.error = one_line(e)
        return build
    build.controller, build.controller_why = horovod_controller(env, build.mpi, build.gloo)
    return build


PROBE_CODE = """
import json, imnet64
import horovod.tensorflow as hvd
hvd.init()
print("IMNET64_PROBE " + json.dumps({"rank": hvd.rank(), "size": hvd.size(),
      "local_rank": hvd.local_rank(), "local_size": hvd.local_size(),
      "mpi_enabled": bool(hvd.mpi_enabled()), "gloo_enabled": bool(hvd.gloo_enabled())}),
      flush=True)
hvd.shutdown()
"""


def probe_horovod(timeout: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """hvd.init() in a child process (a failed MPI start aborts the process that tries):
    the world it joined, or {"error": one line}. Every rank of the launch must probe."""
    try:
        done = subprocess.run([sys.executable, "-c", PROBE_CODE], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"hvd.init() did not return within {timeout:.0f} s (a rank missing?)"}
    for line in done.stdout.splitlines():
        if line.startswith("IMNET64_PROBE "):
            return json.loads(line.split(" ", 1)[1])
    lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
    interesting = [ln for ln in lines if "error" in ln.lower() or "not built" in ln.lower()]
    reason = (interesting or lines or ["no output"])[-1][:200]
    return {"error": f"hvd.init() exited with code {done.returncode}: {reason}"}


def auto_precision() -> str:
    """`--precision auto` here: train's and the label teacher's choice, each with its why."""
    from imnet64.cluster.precision import choose

    return (f"train {choose('auto').line()}; "
            f"label {choose('auto', teacher_pass=True).line()}")


def read_tensorflow(quick: bool) -> tuple[TensorFlowInfo, int | None]:
    """TensorFlow facts, and the number of GPUs it lists (None when not imported)."""
    from imnet64.cluster.machine import (
        cpu_flags,
        describe,
        onednn_state,
        read_cpuinfo,
        tensorflow_version,
    )

    info = TensorFlowInfo(tensorflow_version(), False)
    flags = cpu_flags(read_cpuinfo())
    cpu = describe()
    info.machine = f"{cpu.cpu}, {cpu.cores} cores, {cpu.memory_gib:g} GiB, " + (
        " ".join(cpu.extensions) or "no AVX2")
    xla_flags = Environment.read().tf_xla_flags
    if quick or info.version is None:
        info.onednn, info.onednn_why = onednn_state(flags, ask_tensorflow=False)
        info.xla = f"TF_XLA_FLAGS={xla_flags}" if xla_flags else "not asked (--quick)"
        info.precision = auto_precision()
        return info, None
    try:
        import tensorflow as tf

        gpus = len(tf.config.list_physical_devices("GPU"))
        info.imported = True
        info.built_with_cuda = bool(tf.test.is_built_with_cuda())
        info.onednn, info.onednn_why = onednn_state(flags)
        info.precision = auto_precision()  # TensorFlow loaded: GPUs' compute capability too
        jit = tf.config.optimizer.get_jit()
        info.xla = (f"auto-clustering {'on' if jit else 'off'}"
                    + (f", TF_XLA_FLAGS={xla_flags}" if xla_flags else "")
                    + "; imnet64 train --xla compiles the train step")
    except Exception as e:  # noqa: BLE001
        info.error = one_line(e)
        return info, None
    return info, gpus


def installed_engines(horovod: HorovodBuild, tensorflow: TensorFlowInfo) -> list[str]:
    """The `train --engine` values this installation can run: horovod when Horovod is
    installed (and imports, unless not asked), tf whenever TensorFlow is there."""
    engines = []
    if horovod.version is not None and horovod.error is None:
        engines.append("horovod")
    if tensorflow.version is not None and tensorflow.error is None:
        engines.append("tf")
    return engines
