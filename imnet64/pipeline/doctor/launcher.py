"""Doctor's launcher section: the rank layout imnet64.cluster.launcher_layout reads, judged
against Horovod's build and, with --probe, against the world hvd.init() joined."""

from __future__ import annotations

from collections.abc import Mapping

from imnet64.cluster.launcher_layout import (
    Launcher,
    read_launcher,
    slurm_mpi_type,
    variable_problems,
)
from imnet64.pipeline.doctor.report import HorovodBuild

__all__ = ["launcher_problems", "read_launcher"]


def launcher_problems(launcher: Launcher, env: Mapping[str, str], horovod: HorovodBuild
                      ) -> tuple[list[str], list[str]]:
    """(problems, notes) of the rank layout."""
    problems = variable_problems(launcher, env)
    notes: list[str] = []
    # PMI and an MPI build only matter to Horovod; the tf engine finds its peers itself
    if launcher.kind == "slurm" and launcher.size > 1 and horovod.version is not None:
        if launcher.pmi is None:
            problems.append(
                f"srun started {launcher.size} tasks without PMI "
                f"(SLURM_MPI_TYPE={slurm_mpi_type(env)}): "
                "Horovod's MPI cannot find the other ranks (each task runs alone as size 1, "
                "or OpenMPI aborts); use srun --mpi=pmix (or SLURM_MPI_TYPE=pmix)")
        elif horovod.imported and horovod.mpi is False:
            problems.append(f"srun started {launcher.size} tasks but Horovod was built "
                            "without MPI: they cannot join one world; rebuild Horovod with "
                            "HOROVOD_WITH_MPI=1, or start the ranks with horovodrun / "
                            "imnet64 train --np")
    # in the batch script the launcher's size is the job's task count
    if launcher.kind == "slurm-batch" and launcher.size > 1:
        notes.append(f"this is the batch script of a {launcher.size}-task job, not a rank: "
                     "`srun --mpi=pmix imnet64 doctor` shows what each rank sees")
    if launcher.kind == "mpi" and not horovod.mpi and horovod.imported:
        problems.append("mpirun started this process but Horovod was built without MPI: "
                        "use horovodrun --gloo or imnet64 train --np")
    problems += _probe_problems(launcher, horovod, notes)
    return problems, notes


def _probe_problems(launcher: Launcher, horovod: HorovodBuild, notes: list[str]) -> list[str]:
    """The world Horovod's probe joined against the launcher's (a note in the batch script,
    where no rank runs yet)."""
    probe = horovod.probe
    if probe is None:
        return []
    if launcher.kind == "slurm-batch":
        notes.append(f"Horovod probe in the batch script: size {probe.get('size')} (the ranks "
                     "start with srun)")
        return []
    if probe.get("error"):
        return [f"Horovod could not start in this task: {probe['error']}"]
    if probe.get("size") != launcher.size:
        return [f"Horovod in this task joined a world of size {probe.get('size')}, "
                f"but the launcher ({launcher.kind}) started {launcher.size} "
                "ranks: the ranks do not see each other"]
    if probe.get("rank") != launcher.rank:
        return [f"Horovod gave this task rank {probe.get('rank')}, the launcher "
                f"rank {launcher.rank}: a rank/host mismatch"]
    return []
