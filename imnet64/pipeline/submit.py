"""`imnet64 submit`'s orchestration: which label shards to run, the three jobs of the
pipeline with their own time limits, and their submission as an afterok chain.

imnet64.cluster.slurm_submit renders and validates each job's script and talks to sbatch;
the CLI (imnet64_cli.submit_cmd) only parses options and shows what this returns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from imnet64.cluster import slurm_submit as sb
from imnet64.errors import UserError


@dataclass(frozen=True)
class LabelSettings:
    """What `submit label` (and the pipeline's label stage) takes beyond the common options."""

    input_path: str | None = None
    label_dir: str | None = None
    teacher: str | None = None
    shards: int | None = None
    max_parallel: int | None = None
    args: str | None = None
    gpus_per_task: int | None = None
    cpus_per_task: int | None = None
    mem_per_task: str | None = None

    def job(self, common: sb.Common, only: list[int] | None = None) -> sb.Job:
        return sb.label_job(common, input_path=self.input_path, label_dir=self.label_dir,
                            teacher=self.teacher, shards=self.shards, only=only,
                            max_parallel=self.max_parallel, args=self.args,
                            gpus_per_task=self.gpus_per_task,
                            cpus_per_task=self.cpus_per_task, mem_per_task=self.mem_per_task)


@dataclass(frozen=True)
class ShardSettings:
    label_dir: str | None = None
    dataset: str | None = None
    ntasks: int | None = None
    args: str | None = None

    def job(self, common: sb.Common) -> sb.Job:
        return sb.shard_job(common, label_dir=self.label_dir, dataset=self.dataset,
                            ntasks=self.ntasks, args=self.args)


@dataclass(frozen=True)
class TrainSettings:
    dataset: str | None = None
    run_dir: str | None = None
    nodes: int | None = None
    ntasks_per_node: int | None = None
    gpus_per_node: int | None = None
    signal: str | None = None
    signal_time: int | None = None
    args: str | None = None
    max_restarts: int | None = None
    engine: str | None = None  # IMNET64_ENGINE: horovod (the template's default) or tf
    allow_gpu_mismatch: bool = False  # ranks per node other than GPUs per node

    def job(self, common: sb.Common) -> sb.Job:
        return sb.train_job(common, **dataclasses.asdict(self))


def missing_label_shards(label_dir: str | os.PathLike, num_shards: int) -> list[int]:
    """Shard indexes of `label_dir` that are not done (missing or partial)."""
    from imnet64.formats.label_status import label_status

    if not Path(label_dir).is_dir():
        return list(range(num_shards))
    status = label_status(label_dir, num_shards)
    return [s.index for s in status.shards if s.state != "done"]


@dataclass(frozen=True)
class LabelPlan:
    """The label job to submit, and the shards it runs when only the missing ones are
    (None: all of them). No job: every shard is done already."""

    job: sb.Job | None
    only: list[int] | None = None


def plan_label(common: sb.Common, label: LabelSettings, missing_only: bool) -> LabelPlan:
    if not missing_only:
        return LabelPlan(label.job(common))
    if label.shards is None or not label.label_dir:
        raise UserError("--missing-only needs --label-dir and --shards")
    sb.check_text("--label-dir", label.label_dir)
    only = missing_label_shards(label.label_dir, label.shards)
    return LabelPlan(label.job(common, only) if only else None, only)


def _with_time(common: sb.Common, stage: str, time_limit: str | None) -> sb.Common:
    """`common` with the stage's own time limit (--label-time, ...) when one is given."""
    if time_limit is None:
        return common
    return dataclasses.replace(common, time=time_limit, time_option=f"--{stage}-time")


def pipeline_jobs(common: sb.Common, label: LabelSettings, shard: ShardSettings,
                  train: TrainSettings, stage_times: Mapping[str, str | None]) -> list[sb.Job]:
    """label (array) -> shard-records -> train: one Job per stage, in sb.STAGES order."""
    if common.template is not None:
        sb.check_text("--template", common.template)
        raise UserError("--template names one file; the pipeline uses the three templates")
    times = {stage: stage_times.get(stage) for stage in sb.STAGES}
    jobs = [label.job(_with_time(common, "label", times["label"])),
            shard.job(_with_time(common, "shard", times["shard"])),
            train.job(_with_time(common, "train", times["train"]))]
    # values of the training job that contradict each other (--signal-time and
    # --train-time, ranks and GPUs) are refused before any job is shown or submitted; a
    # broken template still comes out in order, after the scripts before it
    with contextlib.suppress(sb.TemplateError):
        jobs[-1].render()
    return jobs


def dry_run_scripts(jobs: list[sb.Job]) -> Iterator[tuple[str, str]]:
    """(stage, script) of each job as it would be submitted, each after the one before;
    rendered one at a time, so a bad later template does not hide the earlier scripts."""
    for i, job in enumerate(jobs):
        if i:
            job.sbatch["--dependency"] = f"afterok:<{sb.STAGES[i - 1]}-job-id>"
        yield job.stage, job.render()


def submit_chained(jobs: list[sb.Job]) -> list[tuple[str, str]]:
    """(stage, job id) of each job, submitted as an afterok chain (the ones submitted are
    cancelled when sbatch refuses a later one)."""
    return [(job.stage, job_id) for job, job_id in zip(jobs, sb.submit_chain(jobs))]
