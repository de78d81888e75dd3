"""Doctor's GPU section: the GPUs this process sees (CUDA_VISIBLE_DEVICES, nvidia-smi,
TensorFlow) against those Slurm granted (imnet64.cluster.launcher_layout), `--gpus` and the
ranks on this node."""

from __future__ import annotations

import re
from collections.abc import Mapping

from imnet64.cluster.launcher_layout import Launcher, gpu_list_count, read_gpu_grant
from imnet64.pipeline.doctor.report import Gpus


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


def read_gpus(env: Mapping[str, str], expected: int | None, tensorflow: int | None,
              smi: int | None) -> Gpus:
    """The GPUs visible here (`smi`: nvidia-smi's count, None without it) and granted."""
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    visible = gpu_list_count(cvd) if cvd is not None else smi
    grant = read_gpu_grant(env)
    return Gpus(cvd, visible, smi, tensorflow, grant.granted, expected, grant.per_task,
                grant.variables)


def gpu_problems(gpus: Gpus, launcher: Launcher, np_text: str | None) -> list[str]:
    """GPUs asked for but not visible, GPUs no rank uses, ranks sharing a GPU, GPUs
    TensorFlow does not see."""
    where = f"CUDA_VISIBLE_DEVICES={gpus.cuda_visible_devices}" \
        if gpus.cuda_visible_devices is not None else f"nvidia-smi: {gpus.nvidia_smi}" \
        if gpus.nvidia_smi is not None else "no nvidia-smi, CUDA_VISIBLE_DEVICES unset"
    visible = gpus.visible or 0
    problems = _asked_but_not_visible(gpus, np_text, where) + _ranks_against_gpus(
        gpus, launcher, where)
    if gpus.tensorflow == 0 and visible > 0:
        problems.append(f"{visible} GPU(s) visible ({where}) but TensorFlow sees none: a "
                        "CPU-only TensorFlow, or no CUDA driver here (in a container: "
                        "apptainer exec --nv / docker run --gpus all)")
    return problems


def _asked(gpus: Gpus) -> bool:
    return gpus.expected not in (None, 0) or bool(gpus.granted)  # --gpus 0: a CPU job


def _asked_but_not_visible(gpus: Gpus, np_text: str | None, where: str) -> list[str]:
    """GPUs that --gpus, --np auto or Slurm's grant expect but this process does not see."""
    problems: list[str] = []
    visible = gpus.visible or 0
    if np_text == "auto" and _asked(gpus) and visible == 0:
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
    return problems


def _ranks_against_gpus(gpus: Gpus, launcher: Launcher, where: str) -> list[str]:
    """GPUs on this node no rank will use, and ranks that would share a GPU."""
    problems: list[str] = []
    visible = gpus.visible or 0
    in_play = _asked(gpus) or visible > 0 or bool(gpus.tensorflow)
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
    return problems
