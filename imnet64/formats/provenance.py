"""What produced an output: the provenance block every output records, and its pure helpers.

Every file imnet64 writes for people or for the next stage (label part summaries,
dataset.json, a run's config.json and history.json, an exported model's metadata, an
evaluation, the demo's summary.json) carries a ``"provenance"`` block with the FIELDS below,
so that any file can be traced back to the code, the environment, the teacher and the job
that made it. imnet64.cluster.provenance collects them; this module only defines and reads
the block (no environment, no git, no TensorFlow).

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
missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    "teacher_sha256",  # of its weights (imnet64.teacher.fingerprint says of which files)
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


def teacher_fields(record: Mapping[str, Any] | None) -> dict[str, Any]:
    """{"teacher": ..., "teacher_sha256": ...} of another output (its provenance block,
    else its top-level "teacher"): how a dataset, a run and a model name their teacher."""
    record = record or {}
    block = record.get(KEY) if isinstance(record.get(KEY), Mapping) else {}
    teacher = block.get("teacher", record.get("teacher"))
    return {"teacher": teacher if isinstance(teacher, str) else None,
            "teacher_sha256": block.get("teacher_sha256")}


# -- showing it -------------------------------------------------------------------------------


def lines(fields: Mapping[str, Any] | None) -> list[str]:
    """Two or three short lines for people (inspect, evaluate, doctor)."""
    if not fields:
        return ["not recorded (written by an imnet64 older than provenance records)"]
    f = dict(fields)
    out = [_code_line(f)]
    if f.get("teacher"):
        sha = f.get("teacher_sha256")
        out.append(f"teacher {f['teacher']} (sha256 {sha[:16] + '…' if sha else 'unknown'})")
    out.append(_where_line(f))
    return out


def _code_line(f: Mapping[str, Any]) -> str:
    code = f"imnet64 {f.get('imnet64_version') or '?'}"
    if f.get("git_commit"):
        dirty = {True: ", modified", False: "", None: ""}[f.get("git_dirty")]
        code += f" (git {str(f['git_commit'])[:12]}{dirty})"
    code += (f", Python {f.get('python') or '?'}, TensorFlow {f.get('tensorflow') or '-'}, "
             f"Horovod {f.get('horovod') or '-'}")
    if f.get("container_image"):
        code += f", image {f['container_image']}"
    return code


def _where_line(f: Mapping[str, Any]) -> str:
    where = f"host {f.get('host') or '?'}"
    if f.get("slurm_job_id"):
        job = (f"{f['slurm_array_job_id']}_{f['slurm_array_task_id']}"
               if f.get("slurm_array_job_id") else f["slurm_job_id"])
        where += f", Slurm job {job}"
        if f.get("slurm_step_id"):
            where += f" step {f['slurm_step_id']}"
    return where
