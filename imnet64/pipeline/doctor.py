"""`imnet64 doctor`: what a job will see and use here, and what would make it fail.

Run it on a login node, inside `srun`/`sbatch`, or in the container, before burning an
allocation. It reads what imnet64 itself reads (the launcher's variables: Slurm, OpenMPI,
PMI/PMIx, horovodrun; the GPUs; Horovod's build; TensorFlow; the teacher; the output
folder) and reports each mismatch that would make a job hang or fail as one line in
`Report.problems`. Things worth knowing that do not fail a job are `Report.notes`.

Nothing here downloads anything: a TF Hub teacher is looked up in the cache only (and the
network is probed with a 3 s TCP connect when it is not cached). TensorFlow and Horovod are
imported unless `quick`; `probe` also starts Horovod in a child process (hvd.init(), as
`imnet64 train` does) and compares the world it joins with the launcher's.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from imnet64.cluster import launch_checks, provenance
from imnet64.cluster.environment import Environment
from imnet64.errors import one_line
from imnet64.pipeline import doctor_probes

# -- disk estimate -----------------------------------------------------------------------------
# Bytes per image, measured by serializing imnet64's own records (tfrecord_schema) for an image
# named like ImageNet's (train/n01440764/n01440764_10026.png, 35 characters) with top-5:
# a label record is 325 bytes + the image, a dataset record 456 + the image; TFRecord adds
# 16 bytes of framing and ~3 of length prefix; a label CSV row is ~60 bytes.
# tests/test_doctor.py checks these against real records of real photos.
LABEL_RECORD_OVERHEAD = 325 + 19
LABEL_CSV_ROW = 60
DATASET_RECORD_OVERHEAD = 456 + 19
# The mean PNG of 64x64 photos (our sample crops; docs/datasets.md: 7189 bytes/image). The
# label parts and png dataset shards keep each input's original bytes.
DEFAULT_IMAGE_BYTES = 7200
RAW_IMAGE_BYTES = 64 * 64 * 3  # --encoding raw
DEFAULT_SHARD_MIB = 128.0  # shard-records --shard-size-mb
FILES_PER_LABEL_SHARD = 5  # .tfrecord .csv .json .timing.json .lock
DISK_MARGIN = 1.05  # what the estimate may be off by before it is called a problem
STAGES = ("label", "dataset", "all")

NETWORK_TIMEOUT_S = 3.0
PROBE_TIMEOUT_S = 180.0
_PMI_VARS = ("PMIX_RANK", "PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK")
_GPU_VARS = ("SLURM_GPUS", "SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE", "SLURM_GPUS_PER_TASK",
             "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "GPU_DEVICE_ORDINAL", "SLURM_TRES_PER_TASK")


# -- the report --------------------------------------------------------------------------------


@dataclass
class Launcher:
    kind: str  # "slurm" (srun step), "slurm-batch" (the batch script), "mpi", "pmi",
    #            "horovodrun" or "none"
    rank: int
    local_rank: int
    size: int
    local_size: int  # ranks on this node
    nodes: list[str]  # node names of the job step (expanded Slurm node list), where known
    node: str | None  # this node's Slurm name (SLURMD_NODENAME)
    host: str
    pmi: str | None  # how MPI learns its rank: "pmix", "pmi", "ompi" (mpirun), None
    variables: dict[str, str] = field(default_factory=dict)  # what it was read from


@dataclass
class Gpus:
    cuda_visible_devices: str | None
    visible: int | None  # CUDA_VISIBLE_DEVICES' count, else nvidia-smi's (None: unknown)
    nvidia_smi: int | None  # GPUs nvidia-smi lists (None: no nvidia-smi)
    tensorflow: int | None  # GPUs TensorFlow lists (None: not asked)
    granted: int | None  # GPUs Slurm granted on this node
    expected: int | None  # --gpus N (None: not given; -1: all)
    per_task: bool  # Slurm binds GPUs per task (--gpus-per-task)
    slurm: dict[str, str] = field(default_factory=dict)


@dataclass
class HorovodBuild:
    version: str | None
    imported: bool
    mpi: bool | None = None
    gloo: bool | None = None
    nccl: bool | None = None
    controller: str | None = None  # the one hvd.init() would use here
    controller_why: str = ""
    error: str | None = None
    probe: dict[str, Any] | None = None  # hvd.init() in a child: rank, size, ... or error


@dataclass
class TensorFlowInfo:
    version: str | None
    imported: bool
    built_with_cuda: bool | None = None
    onednn: bool | None = None
    onednn_why: str = ""
    xla: str = ""
    error: str | None = None
    machine: str = ""  # imnet64.cluster.machine's line: CPU, vector extensions, cores, memory
    precision: str = ""  # what --precision auto picks here, and why (auto_precision)


@dataclass
class TeacherCheck:
    spec: str
    kind: str  # "offline", "tfhub", "folder"
    path: str | None
    cache_dir: str | None  # TF Hub cache (tfhub) or IMNET64_HOME (offline)
    present: bool
    sha256: str | None
    note: str = ""


@dataclass
class DiskCheck:
    folder: str
    measured_at: str  # the nearest existing folder (statvfs)
    free_bytes: int
    free_inodes: int | None  # None: the file system does not say
    stage: str
    images: int | None
    bytes_per_image: int | None
    needed_bytes: int | None
    needed_inodes: int | None
    estimate: str = ""


@dataclass
class Report:
    launcher: Launcher
    gpus: Gpus
    horovod: HorovodBuild
    tensorflow: TensorFlowInfo
    teacher: TeacherCheck | None
    disk: DiskCheck | None
    provenance: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    engines: list[str] = field(default_factory=list)  # what `train --engine` can use here

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


# -- small readers -----------------------------------------------------------------------------


def _int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    return int(value) if re.fullmatch(r"-?[0-9]+", value) else None


def _bracket_choices(group: str) -> list[str]:
    """"[1-2,05]" -> 1 2 05 (a range keeps the zero padding of its first number)."""
    choices = []
    for rng in group[1:-1].split(","):
        lo, _, hi = rng.partition("-")
        if hi and lo.isdigit() and hi.isdigit():
            choices += [str(i).zfill(len(lo)) for i in range(int(lo), int(hi) + 1)]
        else:
            choices.append(rng)
    return choices


def expand_hostlist(text: str) -> list[str]:
    """Slurm's compressed host list -> names: "node[1-2,05],login" -> node1 node2 node05
    login (zero padding kept; several bracket groups in one name multiply)."""
    names: list[str] = []
    for item in re.findall(r"(?:[^,\[]+|\[[^\]]*\])+", text or ""):
        expanded = [""]
        for part in re.split(r"(\[[^\]]*\])", item):
            choices = _bracket_choices(part) if part.startswith("[") else [part]
            expanded = [e + c for e in expanded for c in choices]
        names += [n for n in expanded if n]
    return names


def tasks_per_node(text: str) -> list[int]:
    """SLURM_TASKS_PER_NODE "2(x3),1" -> [2, 2, 2, 1]."""
    counts: list[int] = []
    for item in (text or "").split(","):
        m = re.fullmatch(r"\s*([0-9]+)(?:\(x([0-9]+)\))?\s*", item)
        if m:
            counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts


def _gpu_list_count(value: str | None) -> int | None:
    if value is None:
        return None
    return len([d for d in value.split(",") if d.strip() and d.strip() != "-1"])


# -- launcher ----------------------------------------------------------------------------------


def read_launcher(env: Mapping[str, str], np_: int | None = None) -> Launcher:
    """Who starts the ranks, and this process's place among them, from the environment
    (what Horovod, OpenMPI and imnet64.cluster.environment read)."""
    host = platform.node()
    node = env.get("SLURMD_NODENAME") or None
    node_list = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or ""
    nodes = expand_hostlist(node_list)
    pmi = ("pmix" if "PMIX_RANK" in env else "pmi" if "PMI_RANK" in env
           else "ompi" if "OMPI_COMM_WORLD_RANK" in env else None)
    keep = [k for k in env if k.startswith(("SLURM_", "OMPI_COMM_WORLD", "PMI", "HOROVOD_"))
            and not k.startswith(("PMIX_SERVER", "PMIX_DSTORE", "PMIX_GDS", "PMIX_BFROP",
                                  "PMIX_SECURITY", "PMIX_SYSTEM", "PMIX_VERSION",
                                  "SLURM_PMIX", "SLURM_SRUN_COMM", "SLURM_STEP_LAUNCHER"))]
    variables = {k: env[k] for k in sorted(keep)}

    def launcher(kind: str, rank, local_rank, size, local_size) -> Launcher:
        return Launcher(kind, rank or 0, local_rank or 0, size or 1, local_size or 1, nodes,
                        node, host, pmi, variables)

    if "HOROVOD_RANK" in env:  # horovodrun (Gloo), or our own `train --np`
        return launcher("horovodrun", _int(env, "HOROVOD_RANK"), _int(env, "HOROVOD_LOCAL_RANK"),
                        _int(env, "HOROVOD_SIZE"), _int(env, "HOROVOD_LOCAL_SIZE"))
    if "OMPI_COMM_WORLD_RANK" in env and "SLURM_STEP_ID" not in env:  # mpirun
        return launcher("mpi", _int(env, "OMPI_COMM_WORLD_RANK"),
                        _int(env, "OMPI_COMM_WORLD_LOCAL_RANK"), _int(env, "OMPI_COMM_WORLD_SIZE"),
                        _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE"))
    per_node = tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE")
                              or env.get("SLURM_TASKS_PER_NODE", ""))
    node_id = _int(env, "SLURM_NODEID") or 0
    tasks_here = per_node[node_id] if node_id < len(per_node) else None
    if "SLURM_STEP_ID" in env and "SLURM_PROCID" in env:  # an srun step
        return launcher("slurm", _int(env, "SLURM_PROCID"), _int(env, "SLURM_LOCALID"),
                        _int(env, "SLURM_STEP_NUM_TASKS") or _int(env, "SLURM_NTASKS"),
                        tasks_here)
    if "PMI_RANK" in env or "PMIX_RANK" in env:  # another PMI launcher (MPICH's, prun)
        rank = _int(env, "PMI_RANK") if "PMI_RANK" in env else _int(env, "PMIX_RANK")
        return launcher("pmi", rank, _int(env, "MPI_LOCALRANKID"), _int(env, "PMI_SIZE"),
                        _int(env, "MPI_LOCALNRANKS"))
    if env.get("SLURM_JOB_ID"):  # the batch script, before any srun: the job's plan
        return launcher("slurm-batch", 0, 0, _int(env, "SLURM_NTASKS"), tasks_here)
    # no launcher: `imnet64 train --np N` would start N ranks here
    return launcher("none", 0, 0, 1, np_ or 1)


def launcher_problems(launcher: Launcher, env: Mapping[str, str], horovod: HorovodBuild
                      ) -> tuple[list[str], list[str]]:
    """(problems, notes) of the rank layout."""
    problems: list[str] = []
    notes: list[str] = []
    ntasks, procid = _int(env, "SLURM_NTASKS"), _int(env, "SLURM_PROCID")
    step_tasks = _int(env, "SLURM_STEP_NUM_TASKS")
    if procid is not None:
        total = step_tasks if launcher.kind == "slurm" and step_tasks else ntasks
        total_name = ("SLURM_STEP_NUM_TASKS" if launcher.kind == "slurm" and step_tasks
                      else "SLURM_NTASKS")
        if total is None:
            problems.append(f"SLURM_PROCID={procid} but SLURM_NTASKS is not set: a task with "
                            "no task count (an environment copied from another job?)")
        elif not 0 <= procid < total:
            problems.append(f"SLURM_PROCID={procid} is not a rank of {total_name}={total} "
                            "tasks: Slurm variables of another job or step (e.g. exported into "
                            "a nested sbatch/srun)")
    localid = _int(env, "SLURM_LOCALID")
    if launcher.kind == "slurm" and localid is not None and localid >= launcher.local_size:
        problems.append(f"SLURM_LOCALID={localid} but this node runs {launcher.local_size} "
                        "task(s) of the step: inconsistent Slurm variables")
    ompi_size = _int(env, "OMPI_COMM_WORLD_SIZE")
    if ompi_size is not None and launcher.kind == "slurm" and ompi_size != launcher.size:
        problems.append(f"OMPI_COMM_WORLD_SIZE={ompi_size} but the srun step has "
                        f"{launcher.size} tasks: mpirun inside srun starts another world")
    # PMI and an MPI build only matter to Horovod; the tf engine finds its peers itself
    if launcher.kind == "slurm" and launcher.size > 1 and horovod.version is not None:
        if launcher.pmi is None:
            mpi_type = env.get("SLURM_MPI_TYPE") or "none"
            problems.append(
                f"srun started {launcher.size} tasks without PMI (SLURM_MPI_TYPE={mpi_type}): "
                "Horovod's MPI cannot find the other ranks (each task runs alone as size 1, "
                "or OpenMPI aborts); use srun --mpi=pmix (or SLURM_MPI_TYPE=pmix)")
        elif horovod.imported and horovod.mpi is False:
            problems.append(f"srun started {launcher.size} tasks but Horovod was built "
                            "without MPI: they cannot join one world; rebuild Horovod with "
                            "HOROVOD_WITH_MPI=1, or start the ranks with horovodrun / "
                            "imnet64 train --np")
    if launcher.kind == "slurm-batch" and (ntasks or 1) > 1:
        notes.append(f"this is the batch script of a {ntasks}-task job, not a rank: "
                     "`srun --mpi=pmix imnet64 doctor` shows what each rank sees")
    if launcher.kind == "mpi" and not horovod.mpi and horovod.imported:
        problems.append("mpirun started this process but Horovod was built without MPI: "
                        "use horovodrun --gloo or imnet64 train --np")
    probe = horovod.probe
    if probe is not None and launcher.kind == "slurm-batch":
        notes.append(f"Horovod probe in the batch script: size {probe.get('size')} (the ranks "
                     "start with srun)")
    elif probe is not None:
        if probe.get("error"):
            problems.append(f"Horovod could not start in this task: {probe['error']}")
        elif probe.get("size") != launcher.size:
            problems.append(f"Horovod in this task joined a world of size {probe.get('size')}, "
                            f"but the launcher ({launcher.kind}) started {launcher.size} "
                            "ranks: the ranks do not see each other")
        elif probe.get("rank") != launcher.rank:
            problems.append(f"Horovod gave this task rank {probe.get('rank')}, the launcher "
                            f"rank {launcher.rank}: a rank/host mismatch")
    return problems, notes


# -- GPUs --------------------------------------------------------------------------------------


def read_gpus(env: Mapping[str, str], expected: int | None, tensorflow: int | None,
              smi: int | None) -> Gpus:
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    visible = _gpu_list_count(cvd) if cvd is not None else smi
    granted = _int(env, "SLURM_GPUS_ON_NODE")
    if granted is None:
        granted = _gpu_list_count(env.get("SLURM_STEP_GPUS") or env.get("SLURM_JOB_GPUS"))
    per_task = bool(env.get("SLURM_GPUS_PER_TASK")) or "gres/gpu" in env.get(
        "SLURM_TRES_PER_TASK", "")
    return Gpus(cvd, visible, smi, tensorflow, granted, expected, per_task,
                {k: env[k] for k in _GPU_VARS if k in env})


def gpu_problems(gpus: Gpus, launcher: Launcher, np_text: str | None) -> list[str]:
    problems: list[str] = []
    where = f"CUDA_VISIBLE_DEVICES={gpus.cuda_visible_devices}" \
        if gpus.cuda_visible_devices is not None else f"nvidia-smi: {gpus.nvidia_smi}" \
        if gpus.nvidia_smi is not None else "no nvidia-smi, CUDA_VISIBLE_DEVICES unset"
    visible = gpus.visible or 0
    asked = gpus.expected not in (None, 0) or bool(gpus.granted)  # --gpus 0: a CPU job
    if np_text == "auto" and asked and visible == 0:
        why = (f"--gpus {'all' if gpus.expected == -1 else gpus.expected}"
               if gpus.expected not in (None, 0) else f"Slurm granted {gpus.granted}")
        problems.append(f"--np auto would start 1 rank on the CPU: no GPU is visible here "
                        f"({where}) although GPUs were asked for ({why}); in a container: "
                        "docker run --gpus all / apptainer exec --nv")
    elif gpus.expected == -1 and visible == 0:
        problems.append(f"--gpus all expected, but no GPU is visible here ({where})")
    elif gpus.expected not in (None, -1) and visible < gpus.expected:
        problems.append(f"--gpus {gpus.expected} expected, but {visible} GPU(s) are visible "
                        f"here ({where})")
    if gpus.granted and visible == 0 and gpus.cuda_visible_devices is None:
        problems.append(f"Slurm granted {gpus.granted} GPU(s) on this node but none is visible "
                        "(CUDA_VISIBLE_DEVICES unset, no nvidia-smi)")
    in_play = asked or visible > 0 or bool(gpus.tensorflow)
    ranks = launcher.local_size
    here = gpus.granted or visible
    if launcher.kind in ("slurm", "slurm-batch") and not gpus.per_task and here > ranks >= 1:
        # a rank uses one GPU (Horovod pins local rank % GPUs; one per tf.distribute worker)
        problems.append(f"{here} GPU(s) on this node but {ranks} rank(s) here: {here - ranks} "
                        "GPU(s) no rank will use for the whole job; one rank per GPU "
                        f"(--ntasks-per-node {here}, which `imnet64 submit train` now sets)")
    if in_play and ranks > 1:
        if gpus.per_task:
            if visible < 1:
                problems.append(f"GPUs are bound per task (SLURM_GPUS_PER_TASK) but this task "
                                f"sees none ({where})")
        elif visible < ranks:
            problems.append(
                f"{ranks} ranks per node but {visible} GPU(s) visible to each ({where}): ranks "
                "would share a GPU (Horovod pins local rank % GPUs) and run out of memory or "
                "hang in NCCL; ask one GPU per rank (--gpus-per-node "
                f"{ranks}, or --gpus-per-task 1) or fewer ranks per node")
    if gpus.tensorflow == 0 and visible > 0:
        problems.append(f"{visible} GPU(s) visible ({where}) but TensorFlow sees none: a "
                        "CPU-only TensorFlow, or no CUDA driver here (in a container: "
                        "apptainer exec --nv / docker run --gpus all)")
    return problems


# -- Horovod, TensorFlow -----------------------------------------------------------------------


def read_horovod(env: Mapping[str, str], quick: bool) -> HorovodBuild:
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
    # Horovod's own choice in hvd.init() (horovod/common/operations.cc, 0.28.1): an explicit
    # HOROVOD_CONTROLLER, else Gloo when horovodrun --gloo set up its rendezvous, else MPI
    # if built with it, else Gloo.
    if env.get("HOROVOD_CONTROLLER"):
        build.controller = env["HOROVOD_CONTROLLER"].lower()
        build.controller_why = "HOROVOD_CONTROLLER"
    elif env.get("HOROVOD_GLOO_RENDEZVOUS_ADDR"):
        build.controller, build.controller_why = "gloo", "horovodrun --gloo rendezvous"
    elif build.mpi:
        build.controller, build.controller_why = "mpi", "built with MPI"
    elif build.gloo:
        build.controller = "gloo"
        build.controller_why = "built without MPI: size 1 unless started by horovodrun"
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


# -- teacher -----------------------------------------------------------------------------------


def tfhub_cache_dir(env: Mapping[str, str] | Environment) -> Path:
    """TF Hub's cache without importing it: $TFHUB_CACHE_DIR, else <tmp>/tfhub_modules
    (tensorflow_hub.resolver.tfhub_cache_dir(use_temp=True), which imnet64 uses)."""
    environment = env if isinstance(env, Environment) else Environment.read(env)
    return Path(environment.tfhub_cache_dir or Path(tempfile.gettempdir()) / "tfhub_modules")


def _reachable(host: str, port: int, timeout: float = NETWORK_TIMEOUT_S) -> bool:
    """A TCP connect within `timeout` (name lookup included: it runs in a thread)."""
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def _writable_folder(folder: Path) -> bool:
    for p in (folder, *folder.parents):
        if p.exists():
            return p.is_dir() and os.access(p, os.W_OK | os.X_OK)
    return False


def _teacher_check(spec: str, kind: str, path: Path, cache_dir: str | None,
                   present: bool) -> TeacherCheck:
    from imnet64.teacher.fingerprint import teacher_sha256

    return TeacherCheck(spec, kind, str(path), cache_dir, present,
                        teacher_sha256(path) if present else None)


def _check_offline_teacher(environment: Environment) -> tuple[TeacherCheck, list[str]]:
    from imnet64.teacher import offline
    from imnet64.teacher.loading import OFFLINE_SPEC

    home = environment.home
    path = offline.offline_teacher_dir(home)
    check = _teacher_check(OFFLINE_SPEC, "offline", path, str(home),
                           offline.is_current_build(path))
    if check.present:
        return check, []
    try:
        offline.default_weights_path()
    except Exception as e:  # noqa: BLE001  (UserError: the package is missing)
        return check, [f"teacher offline: not built in {path} and cannot be: {e}"]
    if not _writable_folder(path.parent):
        return check, [f"teacher offline: not built in {path}, and IMNET64_HOME ({home}) is "
                       "not writable here: build it where it is (imnet64 teacher build) or "
                       "point IMNET64_HOME at a writable folder"]
    check.note = f"built on first use (~10 s, no network) into {path}"
    return check, []


def _check_hub_teacher(spec: str, environment: Environment, network: bool
                       ) -> tuple[TeacherCheck, list[str]]:
    from imnet64.teacher import hub as hub_cache

    cache = tfhub_cache_dir(environment)
    check = _teacher_check(spec, "tfhub", hub_cache.cached_module_dir(spec, cache), str(cache),
                           hub_cache.is_cached(spec, cache))
    if check.present:
        return check, []
    host = urlparse(spec).hostname or "tfhub.dev"
    if network and _reachable(host, 443):
        check.note = f"not cached: would be downloaded from {host} into {cache}"
        return check, []
    return check, [f"teacher {spec} is not in the TF Hub cache {cache} and {host} cannot be "
                   f"reached from here: a label job would fail; {hub_cache.fetch_hint(spec)}"]


def _check_folder_teacher(spec: str) -> tuple[TeacherCheck, list[str]]:
    path = Path(spec).expanduser().absolute()
    present = (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file()
    check = _teacher_check(spec, "folder", path, None, present)
    if present:
        return check, []
    return check, [f"teacher {spec}: {path} is not a SavedModel folder (no saved_model.pb) "
                   "here: is it on a file system this node mounts?"]


def check_teacher(spec: str | None, env: Mapping[str, str] | Environment, network: bool = True
                  ) -> tuple[TeacherCheck, list[str]]:
    """The teacher `imnet64 label` would load (same resolution as teacher.loading), whether
    it is here, and a problem if a job could not get it."""
    from imnet64.teacher import hub as hub_cache
    from imnet64.teacher.loading import DEFAULT_HANDLE, OFFLINE_SPEC

    environment = env if isinstance(env, Environment) else Environment.read(env)
    spec = str(spec or "").strip() or environment.teacher or DEFAULT_HANDLE
    if spec == OFFLINE_SPEC:
        return _check_offline_teacher(environment)
    if hub_cache.is_url_handle(spec):
        return _check_hub_teacher(spec, environment, network)
    return _check_folder_teacher(spec)


# -- disk --------------------------------------------------------------------------------------


def estimate_bytes_per_image(stage: str, image_bytes: int = DEFAULT_IMAGE_BYTES,
                             encoding: str = "png") -> int:
    """Bytes one image adds to the label parts, to the dataset shards, or both ("all")."""
    label = image_bytes + LABEL_RECORD_OVERHEAD + LABEL_CSV_ROW
    dataset = (image_bytes if encoding == "png" else RAW_IMAGE_BYTES) + DATASET_RECORD_OVERHEAD
    return {"label": label, "dataset": dataset, "all": label + dataset}[stage]


def check_disk(folder: str | os.PathLike, images: int | None, stage: str = "all",
               image_bytes: int = DEFAULT_IMAGE_BYTES, shards: int = 1,
               shard_mib: float = DEFAULT_SHARD_MIB) -> tuple[DiskCheck, list[str]]:
    """Free space and inodes of `folder` (or its nearest existing parent) against what a
    run over `images` images writes there."""
    folder = Path(folder).expanduser().absolute()
    at = next(p for p in (folder, *folder.parents) if p.exists())
    st = os.statvfs(at)
    free = st.f_bavail * st.f_frsize
    inodes = st.f_favail if st.f_files else None  # some file systems report 0 of 0
    check = DiskCheck(str(folder), str(at), free, inodes, stage, images, None, None, None)
    if images is None:
        return check, []
    per_image = estimate_bytes_per_image(stage, image_bytes)
    needed = per_image * images
    dataset_bytes = estimate_bytes_per_image("dataset", image_bytes) * images
    dataset_files = 2 * max(2, math.ceil(dataset_bytes / (shard_mib * 2**20))) + 3
    label_files = FILES_PER_LABEL_SHARD * shards + 1
    needed_inodes = {"label": label_files, "dataset": dataset_files,
                     "all": label_files + dataset_files}[stage]
    check.bytes_per_image, check.needed_bytes, check.needed_inodes = per_image, needed, \
        needed_inodes
    check.estimate = (f"{per_image} bytes/image = a {image_bytes}-byte PNG kept in the "
                      + {"label": "label part", "dataset": "dataset shard",
                         "all": "label part and again in the dataset shard"}[stage]
                      + " + record overhead; files: 5 per label shard, 2 per dataset shard")
    problems = []
    if needed * DISK_MARGIN > free:
        problems.append(f"{folder}: {images} images need about {_size(needed)} "
                        f"({check.estimate.split(' =')[0]}), only {_size(free)} free on "
                        f"{at}")
    if inodes is not None and needed_inodes > inodes:
        problems.append(f"{folder}: about {needed_inodes} files to write, only {inodes} "
                        f"free inodes on {at}")
    return check, problems


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


# -- all together ------------------------------------------------------------------------------


def parse_gpus(text: str | None) -> int | None:
    """--gpus N|all -> N, or -1 for all."""
    if text is None:
        return None
    if text.strip().lower() == "all":
        return -1
    if not re.fullmatch(r"[0-9]+", text.strip()):
        from imnet64.errors import UserError

        raise UserError(f"--gpus must be a number or 'all', not {text!r}")
    return int(text)


def diagnose(*, env: Mapping[str, str] | None = None, teacher: str | None = None,
             check_teacher_: bool = True, out: str | None = None, images: int | None = None,
             stage: str = "all", image_bytes: int = DEFAULT_IMAGE_BYTES, shards: int = 1,
             np_text: str | None = None, gpus: str | None = None, quick: bool = False,
             probe: bool = False, network: bool = True) -> Report:
    """Everything `imnet64 doctor` reports. `env`: the environment to judge (default: this
    process's); TensorFlow and Horovod are asked in this process unless `quick`."""
    environment = Environment.read(env)
    env = environment.variables
    np_ = None
    if np_text is not None and np_text != "auto":
        np_ = int(np_text) if np_text.isdigit() else None
    tf_info, tf_gpus = read_tensorflow(quick)
    horovod = read_horovod(env, quick)
    from imnet64.cluster.launch import nvidia_smi_gpus

    smi = nvidia_smi_gpus() if shutil.which("nvidia-smi") else None
    launcher = read_launcher(env, np_)
    if np_text == "auto" and launcher.kind == "none":
        visible = _gpu_list_count(env.get("CUDA_VISIBLE_DEVICES")) \
            if "CUDA_VISIBLE_DEVICES" in env else (smi or 0)
        launcher.local_size = max(1, visible)
    gpu_info = read_gpus(env, parse_gpus(gpus), tf_gpus, smi)
    if probe and horovod.imported and horovod.error is None:
        horovod.probe = probe_horovod()
    problems, notes = launcher_problems(launcher, env, horovod)
    problems += gpu_problems(gpu_info, launcher, np_text)
    if horovod.error:
        problems.append(f"Horovod {horovod.version} is installed but does not import: "
                        f"{horovod.error}")
    elif horovod.version is None and launcher.size > 1:
        notes.append(f"{launcher.kind} started {launcher.size} ranks and Horovod is not "
                     "installed: train them with --engine tf")
    if tf_info.error:
        problems.append(f"TensorFlow {tf_info.version} does not import: {tf_info.error}")
    problems += launch_checks.environment_problems(environment)
    if np_ and launcher.kind == "none":  # what `train --np N` would refuse here
        from imnet64.cluster import rank_limits
        from imnet64.errors import UserError

        try:
            rank_limits.check_local_ranks(np_, rank_limits.this_machine(gpu_info.visible or 0))
        except UserError as e:
            problems.append(str(e))
    teacher_check = None
    if check_teacher_:
        teacher_check, teacher_problems = check_teacher(teacher, environment, network)
        problems += teacher_problems
        if teacher_check.present and not quick and tf_info.imported:
            problems += doctor_probes.teacher_problems(teacher_check.spec)
    disk = None
    if out is not None:
        disk, disk_problems = check_disk(out, images, stage, image_bytes, shards)
        problems += doctor_probes.output_problems(out) + disk_problems
    made_by = provenance.collect(
        teacher_check.spec if teacher_check else None,
        teacher_check.sha256 if teacher_check else None, environment)
    engines = installed_engines(horovod, tf_info)
    notes.append("training engines on this stack: " + (", ".join(engines) or "none")
                 + " (imnet64 train --engine)")
    return Report(launcher, gpu_info, horovod, tf_info, teacher_check, disk, made_by,
                  problems, notes, engines)


def installed_engines(horovod: HorovodBuild, tensorflow: TensorFlowInfo) -> list[str]:
    """The `train --engine` values this installation can run: horovod when Horovod is
    installed (and imports, unless not asked), tf whenever TensorFlow is there."""
    engines = []
    if horovod.version is not None and horovod.error is None:
        engines.append("horovod")
    if tensorflow.version is not None and tensorflow.error is None:
        engines.append("tf")
    return engines
