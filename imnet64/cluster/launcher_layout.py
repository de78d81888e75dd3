"""Who started this process and its place among the ranks, read from the variables the
launchers set (Slurm, OpenMPI's mpirun, PMI/PMIx, horovodrun): what `imnet64 doctor` shows
and judges.

imnet64.cluster alone names launcher variables (tests/test_layering.py checks it): the
doctor asks this module for the layout, the GPUs Slurm granted, Horovod's controller and
the variables that contradict each other, and judges the rest (GPUs seen, Horovod's build).
It reads a snapshot of the environment (Environment.variables, or a mapping a test plants)
with its own rules: a variable counts as set when present, a number is `-?[0-9]+` (anything
else reads as unset here; Environment.malformed() names it as a problem).
"""

from __future__ import annotations

import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

# launcher variables a report lists ("what it was read from"), and the PMIx/Slurm plumbing
# among them that says nothing about the layout
_LISTED_PREFIXES = ("SLURM_", "OMPI_COMM_WORLD", "PMI", "HOROVOD_")
_UNLISTED_PREFIXES = ("PMIX_SERVER", "PMIX_DSTORE", "PMIX_GDS", "PMIX_BFROP", "PMIX_SECURITY",
                      "PMIX_SYSTEM", "PMIX_VERSION", "SLURM_PMIX", "SLURM_SRUN_COMM",
                      "SLURM_STEP_LAUNCHER")
# the variables that say which GPUs Slurm granted and how it binds them
GPU_VARS = ("SLURM_GPUS", "SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE", "SLURM_GPUS_PER_TASK",
            "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "GPU_DEVICE_ORDINAL", "SLURM_TRES_PER_TASK")


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


@dataclass(frozen=True)
class GpuGrant:
    """The GPUs Slurm granted on this node, as its variables say."""

    granted: int | None  # None: Slurm says nothing (outside Slurm, or no GPUs asked)
    per_task: bool  # bound per task (--gpus-per-task, or gres/gpu in the per-task TRES)
    variables: dict[str, str]  # the GPU_VARS that are set


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


def gpu_list_count(value: str | None) -> int | None:
    """GPUs in a device list like CUDA_VISIBLE_DEVICES ("0,1" -> 2; "-1" hides them all)."""
    if value is None:
        return None
    return len([d for d in value.split(",") if d.strip() and d.strip() != "-1"])


def read_launcher(env: Mapping[str, str], np_: int | None = None) -> Launcher:
    """Who starts the ranks, and this process's place among them, from the environment
    (what Horovod, OpenMPI and imnet64.cluster.environment read). `np_`: the ranks
    `imnet64 train --np N` would start here when no launcher did."""
    host = platform.node()
    node = env.get("SLURMD_NODENAME") or None
    node_list = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or ""
    nodes = expand_hostlist(node_list)
    pmi = ("pmix" if "PMIX_RANK" in env else "pmi" if "PMI_RANK" in env
           else "ompi" if "OMPI_COMM_WORLD_RANK" in env else None)
    keep = [k for k in env if k.startswith(_LISTED_PREFIXES)
            and not k.startswith(_UNLISTED_PREFIXES)]
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


def variable_problems(launcher: Launcher, env: Mapping[str, str]) -> list[str]:
    """The launcher's variables that contradict each other: a rank outside the task count,
    a local id beyond this node's tasks, an mpirun world inside an srun step."""
    problems: list[str] = []
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
    return problems


def slurm_mpi_type(env: Mapping[str, str]) -> str:
    """srun's --mpi plugin (SLURM_MPI_TYPE), "none" when not set."""
    return env.get("SLURM_MPI_TYPE") or "none"


def read_gpu_grant(env: Mapping[str, str]) -> GpuGrant:
    """The GPUs Slurm granted on this node (SLURM_GPUS_ON_NODE, else the step's or job's
    GPU list) and whether it binds them per task."""
    granted = _int(env, "SLURM_GPUS_ON_NODE")
    if granted is None:
        granted = gpu_list_count(env.get("SLURM_STEP_GPUS") or env.get("SLURM_JOB_GPUS"))
    per_task = bool(env.get("SLURM_GPUS_PER_TASK")) or "gres/gpu" in env.get(
        "SLURM_TRES_PER_TASK", "")
    return GpuGrant(granted, per_task, {k: env[k] for k in GPU_VARS if k in env})


def horovod_controller(env: Mapping[str, str], mpi_built: bool | None, gloo_built: bool | None
                       ) -> tuple[str | None, str]:
    """(controller, why): the one hvd.init() would use here. Horovod's own choice
    (horovod/common/operations.cc, 0.28.1): an explicit HOROVOD_CONTROLLER, else Gloo when
    horovodrun --gloo set up its rendezvous, else MPI if built with it, else Gloo."""
    if env.get("HOROVOD_CONTROLLER"):
        return env["HOROVOD_CONTROLLER"].lower(), "HOROVOD_CONTROLLER"
    if env.get("HOROVOD_GLOO_RENDEZVOUS_ADDR"):
        return "gloo", "horovodrun --gloo rendezvous"
    if mpi_built:
        return "mpi", "built with MPI"
    if gloo_built:
        return "gloo", "built without MPI: size 1 unless started by horovodrun"
    return None, ""
