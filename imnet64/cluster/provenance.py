"""What produced an output: the one place that defines the provenance every output records.

Every file imnet64 writes for people or for the next stage (label part summaries,
dataset.json, a run's config.json and history.json, an exported model's metadata, an
evaluation, the demo's summary.json) carries a ``"provenance"`` block with the FIELDS below,
so that any file can be traced back to the code, the environment, the teacher and the job
that made it.

Two kinds of fields:

- STABLE_FIELDS: the code and the teacher (imnet64 version and git commit, Python,
  TensorFlow and Horovod versions, the container image, the teacher's handle and sha256).
  They are the same on every rank, node and re-run of the same setup.
- RUN_FIELDS: where and in which Slurm job it ran (host, job / array / step ids).

Outputs promised byte-identical (a label part's .json between a re-run and an uninterrupted
run; dataset.json for any --num-workers or number of ranks) hold the stable fields only;
their run fields go to the sidecar written beside them (the part's .timing.json,
dataset.run.json), and the readers merge the two. Every other output holds all FIELDS.

A field that does not apply (no checkout, no Slurm, no container, no teacher) is null, never
missing. Nothing here imports TensorFlow or Horovod: versions come from the installed
packages' metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Mapping
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import imnet64
from imnet64 import atomic

KEY = "provenance"  # the key of the block in every output
STABLE_FIELDS = (
    "imnet64_version",  # imnet64.__version__
    "git_commit",  # the checkout's HEAD when imnet64 runs from one, else null
    "git_dirty",  # tracked files differ from that commit (null: unknown / no checkout)
    "python",
    "tensorflow",  # installed versions (null: not installed)
    "horovod",
    "container_image",  # $IMNET64_IMAGE_ID, set by our Dockerfile (null outside the image)
    "teacher",  # the teacher's handle / name, where a teacher is involved
    "teacher_sha256",  # of its weights (teacher_sha256() says of which files)
)
RUN_FIELDS = (
    "host",
    "slurm_job_id",  # SLURM_JOB_ID: an array task's own id
    "slurm_array_job_id",  # SLURM_ARRAY_JOB_ID, SLURM_ARRAY_TASK_ID
    "slurm_array_task_id",
    "slurm_step_id",  # SLURM_STEP_ID (inside srun)
)
FIELDS = STABLE_FIELDS + RUN_FIELDS
TEACHER_FIELDS = ("teacher", "teacher_sha256")
IMAGE_ID_ENV = "IMNET64_IMAGE_ID"
_SLURM_VARS = {"slurm_job_id": "SLURM_JOB_ID", "slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
               "slurm_array_task_id": "SLURM_ARRAY_TASK_ID", "slurm_step_id": "SLURM_STEP_ID"}
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
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"})
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


# -- the teacher ------------------------------------------------------------------------------


def _saved_model_files(folder: Path) -> list[Path]:
    files = [folder / n for n in ("saved_model.pb", "saved_model.pbtxt") if (folder / n).is_file()]
    variables = folder / "variables"
    if variables.is_dir():
        files += sorted(p for p in variables.rglob("*") if p.is_file())
    return files


def _hash_cache_path(folder: Path) -> Path:
    from imnet64.teacher.offline import imnet64_home

    key = hashlib.sha1(str(folder).encode("utf-8", "surrogateescape")).hexdigest()
    return imnet64_home() / "cache" / "teacher-sha256" / f"{key}.json"


@lru_cache(maxsize=16)
def _saved_model_sha256(folder: Path, signature: str) -> str:
    """sha256 over each file's relative path and sha256, cached on disk by `signature`
    (the files' names, sizes and mtimes): a multi-GB TF Hub model is hashed once, not by
    every array task."""
    cache = _hash_cache_path(folder)
    try:
        cached = atomic.read_json(cache)
        if cached.get("folder") == str(folder) and cached.get("signature") == signature:
            return str(cached["sha256"])
    except (OSError, ValueError, AttributeError, KeyError):
        pass
    digest = hashlib.sha256()
    for path in _saved_model_files(folder):
        rel = path.relative_to(folder).as_posix()
        digest.update(f"{rel}\0{atomic.sha256_file(path)}\n".encode("utf-8", "surrogateescape"))
    value = digest.hexdigest()
    try:  # a read-only IMNET64_HOME only costs the hash again next time
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(cache, {"folder": str(folder), "signature": signature, "sha256": value})
    except OSError:
        pass
    return value


def teacher_sha256(folder: str | os.PathLike | None) -> str | None:
    """The sha256 of a teacher's weights, for its SavedModel `folder`:

    - the offline teacher (imnet64_teacher.json beside saved_model.pb): the sha256 of
      torchvision's .pth weights it was converted from (checked when it was built);
    - any other SavedModel (TF Hub module, your own folder): a sha256 over its
      saved_model.pb and variables/ files (each file's relative path and sha256).

    None when there is no such folder."""
    if folder is None:
        return None
    folder = Path(folder).absolute()
    from imnet64.teacher.offline import METADATA_FILE

    try:
        meta = atomic.read_json(folder / METADATA_FILE)
        if isinstance(meta, dict) and isinstance(meta.get("weights_sha256"), str):
            return meta["weights_sha256"]
    except (OSError, ValueError):
        pass
    files = _saved_model_files(folder)
    if not files:
        return None
    try:
        stats = [(p.relative_to(folder).as_posix(), p.stat()) for p in files]
        signature = hashlib.sha256(json.dumps(
            [(rel, st.st_size, st.st_mtime_ns) for rel, st in stats]).encode()).hexdigest()
        return _saved_model_sha256(folder, signature)
    except OSError:
        return None


def teacher_fields(record: Mapping[str, Any] | None) -> dict[str, Any]:
    """{"teacher": ..., "teacher_sha256": ...} of another output (its provenance block,
    else its top-level "teacher"): how a dataset, a run and a model name their teacher."""
    record = record or {}
    block = record.get(KEY) if isinstance(record.get(KEY), Mapping) else {}
    teacher = block.get("teacher", record.get("teacher"))
    return {"teacher": teacher if isinstance(teacher, str) else None,
            "teacher_sha256": block.get("teacher_sha256")}


# -- the run ----------------------------------------------------------------------------------


def _run(env: Mapping[str, str]) -> dict[str, Any]:
    fields: dict[str, Any] = {"host": platform.node() or None}
    fields.update({k: env.get(v) or None for k, v in _SLURM_VARS.items()})
    return fields


def collect(teacher: str | None = None, teacher_sha256: str | None = None,
            env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """All FIELDS for an output written now by this process, in FIELDS order."""
    env = os.environ if env is None else env
    fields = {**_code(), "container_image": env.get(IMAGE_ID_ENV) or None,
              "teacher": teacher, "teacher_sha256": teacher_sha256, **_run(env)}
    return {k: fields[k] for k in FIELDS}


def of_teacher(teacher: Any, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """collect() for an output a loaded teacher (imnet64.teacher.Teacher) made."""
    return collect(getattr(teacher, "name", None),
                   teacher_sha256(getattr(teacher, "path", None)), env)


def stable(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: fields.get(k) for k in STABLE_FIELDS}


def run_part(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: fields.get(k) for k in RUN_FIELDS}


def merge(stable_part: Mapping[str, Any] | None,
          run_fields: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A byte-identical output's stable block joined with its sidecar's run fields (those
    stay null when the sidecar is missing). None if the output has no block at all."""
    if not isinstance(stable_part, Mapping):
        return None
    run_fields = run_fields if isinstance(run_fields, Mapping) else {}
    return {k: (stable_part.get(k) if k in STABLE_FIELDS else run_fields.get(k))
            for k in FIELDS}


# -- showing it -------------------------------------------------------------------------------


def lines(fields: Mapping[str, Any] | None) -> list[str]:
    """Two or three short lines for people (inspect, evaluate, doctor)."""
    if not fields:
        return ["not recorded (written by an imnet64 older than provenance records)"]
    f = dict(fields)
    code = f"imnet64 {f.get('imnet64_version') or '?'}"
    if f.get("git_commit"):
        dirty = {True: ", modified", False: "", None: ""}[f.get("git_dirty")]
        code += f" (git {str(f['git_commit'])[:12]}{dirty})"
    code += (f", Python {f.get('python') or '?'}, TensorFlow {f.get('tensorflow') or '-'}, "
             f"Horovod {f.get('horovod') or '-'}")
    if f.get("container_image"):
        code += f", image {f['container_image']}"
    out = [code]
    if f.get("teacher"):
        sha = f.get("teacher_sha256")
        out.append(f"teacher {f['teacher']} (sha256 {sha[:16] + '…' if sha else 'unknown'})")
    where = f"host {f.get('host') or '?'}"
    if f.get("slurm_job_id"):
        job = (f"{f['slurm_array_job_id']}_{f['slurm_array_task_id']}"
               if f.get("slurm_array_job_id") else f["slurm_job_id"])
        where += f", Slurm job {job}"
        if f.get("slurm_step_id"):
            where += f" step {f['slurm_step_id']}"
    out.append(where)
    return out
