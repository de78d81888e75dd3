"""The whole check-up: every section of `imnet64 doctor`, in the order the report shows them,
and the problems that take more than one section to see."""

from __future__ import annotations

import shutil
from collections.abc import Mapping

from imnet64.cluster import launch_checks, provenance
from imnet64.cluster.environment import Environment
from imnet64.cluster.launcher_layout import Launcher, gpu_list_count, read_launcher
from imnet64.pipeline.doctor import probes
from imnet64.pipeline.doctor.disk import DEFAULT_IMAGE_BYTES, check_disk
from imnet64.pipeline.doctor.frameworks import (
    installed_engines,
    probe_horovod,
    read_horovod,
    read_tensorflow,
)
from imnet64.pipeline.doctor.gpus import gpu_problems, parse_gpus, read_gpus
from imnet64.pipeline.doctor.launcher import launcher_problems
from imnet64.pipeline.doctor.report import HorovodBuild, Report, TensorFlowInfo
from imnet64.pipeline.doctor.teacher import check_teacher


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
        visible = gpu_list_count(env.get("CUDA_VISIBLE_DEVICES")) \
            if "CUDA_VISIBLE_DEVICES" in env else (smi or 0)
        launcher.local_size = max(1, visible)
    gpu_info = read_gpus(env, parse_gpus(gpus), tf_gpus, smi)
    if probe and horovod.imported and horovod.error is None:
        horovod.probe = probe_horovod()
    problems, notes = launcher_problems(launcher, env, horovod)
    problems += gpu_problems(gpu_info, launcher, np_text)
    problems += _stack_problems(horovod, tf_info, launcher, notes)
    problems += launch_checks.environment_problems(environment)
    if np_ and launcher.kind == "none":
        problems += _too_many_ranks(np_, gpu_info.visible or 0)
    teacher_check = None
    if check_teacher_:
        teacher_check, teacher_problems = check_teacher(teacher, environment, network)
        problems += teacher_problems
        if teacher_check.present and not quick and tf_info.imported:
            problems += probes.teacher_problems(teacher_check.spec)
    disk = None
    if out is not None:
        disk, disk_problems = check_disk(out, images, stage, image_bytes, shards)
        problems += probes.output_problems(out) + disk_problems
    made_by = provenance.collect(
        teacher_check.spec if teacher_check else None,
        teacher_check.sha256 if teacher_check else None, environment)
    engines = installed_engines(horovod, tf_info)
    notes.append("training engines on this stack: " + (", ".join(engines) or "none")
                 + " (imnet64 train --engine)")
    return Report(launcher, gpu_info, horovod, tf_info, teacher_check, disk, made_by,
                  problems, notes, engines)


def _stack_problems(horovod: HorovodBuild, tf_info: TensorFlowInfo, launcher: Launcher,
                    notes: list[str]) -> list[str]:
    """Horovod or TensorFlow installed but broken; several ranks and no Horovod (a note)."""
    problems = []
    if horovod.error:
        problems.append(f"Horovod {horovod.version} is installed but does not import: "
                        f"{horovod.error}")
    elif horovod.version is None and launcher.size > 1:
        notes.append(f"{launcher.kind} started {launcher.size} ranks and Horovod is not "
                     "installed: train them with --engine tf")
    if tf_info.error:
        problems.append(f"TensorFlow {tf_info.version} does not import: {tf_info.error}")
    return problems


def _too_many_ranks(np_: int, visible_gpus: int) -> list[str]:
    """What `train --np N` would refuse here (more local ranks than this machine holds)."""
    from imnet64.cluster import rank_limits
    from imnet64.errors import UserError

    try:
        rank_limits.check_local_ranks(np_, rank_limits.this_machine(visible_gpus))
    except UserError as e:
        return [str(e)]
    return []
