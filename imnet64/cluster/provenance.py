"""What produced an output: collects the provenance fields for this process.

imnet64.formats.provenance defines the block (its FIELDS, which outputs hold which, how
the parts merge); this module fills it in: the code (imnet64 version, git commit, Python,
TensorFlow, Horovod), the container image and the run (host, Slurm ids), from this process
and its Environment. The teacher's sha256 comes from imnet64.teacher.fingerprint. Nothing
here imports TensorFlow or Horovod: versions come from the installed packages' metadata.
"""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import imnet64
from imnet64.cluster.environment import IMAGE_ID_VAR, Environment, with_variables

IMAGE_ID_ENV = IMAGE_ID_VAR
GIT_TIMEOUT_S = 5.0
CHECKOUT = Path(__file__).resolve().parents[2]  # the checkout root when run from one


# -- the code ---------------------------------------------------------------------------------


def _git_dir(root: Path) -> Path | None:
    """root/.git, or the folder a worktree's .git file points to."""
    dot_git = root / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():
        text = dot_git.read_text(errors="replace").strip()
        if text.startswith("gitdir:"):
            found = Path(text.split(":", 1)[1].strip())
            return found if found.is_absolute() else root / found
    return None


def _resolve_ref(git_dir: Path, ref: str) -> str | None:
    """The commit `ref` points to: a loose ref file, else packed-refs (no git needed)."""
    common = git_dir
    commondir = git_dir / "commondir"  # a worktree keeps branches in the main .git
    if commondir.is_file():
        common = (git_dir / commondir.read_text().strip()).resolve()
    for folder in (git_dir, common):
        loose = folder / ref
        if loose.is_file():
            return loose.read_text().strip() or None
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] == ref:
                return parts[0]
    return None


def git_commit(root: Path = CHECKOUT) -> str | None:
    """HEAD's commit of the checkout at `root`, read from .git without running git."""
    try:
        git_dir = _git_dir(root)
        if git_dir is None:
            return None
        head = (git_dir / "HEAD").read_text().strip()
        commit = _resolve_ref(git_dir, head[4:].strip()) if head.startswith("ref:") else head
    except OSError:
        return None
    if commit and len(commit) in (40, 64) and all(c in "0123456789abcdef" for c in commit):
        return commit
    return None


def git_dirty(root: Path = CHECKOUT) -> bool | None:
    """Whether tracked files differ from HEAD (`git status`, untracked files ignored), or
    None when git is missing, slow or refuses the folder (e.g. owned by another user).
    GIT_OPTIONAL_LOCKS=0: never take the index lock, which a concurrent `git commit` needs."""
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=GIT_TIMEOUT_S,
            env=with_variables({"GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}))
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(done.stdout.strip()) if done.returncode == 0 else None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def _code() -> dict[str, Any]:
    """The fields that cannot change while this process runs (asked once)."""
    from imnet64.cluster.machine import tensorflow_version

    commit = git_commit()
    return {
        "imnet64_version": imnet64.__version__,
        "git_commit": commit,
        "git_dirty": git_dirty() if commit else None,
        "python": platform.python_version(),
        "tensorflow": tensorflow_version(),
        "horovod": _version("horovod"),
    }


# -- the run ----------------------------------------------------------------------------------


def _run(environment: Environment) -> dict[str, Any]:
    slurm = environment.slurm
    task = slurm.array_task_id
    return {"host": platform.node() or None, "slurm_job_id": slurm.job_id,
            "slurm_array_job_id": slurm.array_job_id,
            "slurm_array_task_id": None if task is None else str(task),
            "slurm_step_id": slurm.step_id}


def collect(teacher: str | None = None, teacher_sha256: str | None = None,
            environment: Environment | None = None) -> dict[str, Any]:
    """All provenance fields for an output written now by this process, in the order of
    imnet64.formats.provenance.FIELDS (tests/test_provenance.py checks they are the same)."""
    environment = environment or Environment.read()
    return {**_code(), "container_image": environment.image_id,
            "teacher": teacher, "teacher_sha256": teacher_sha256, **_run(environment)}


def of_teacher(teacher: Any, environment: Environment | None = None) -> dict[str, Any]:
    """collect() for an output a loaded teacher (imnet64.teacher.Teacher) made."""
    return collect(teacher.name, teacher.weights_sha256(), environment)
