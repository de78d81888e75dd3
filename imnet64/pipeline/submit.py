"""`imnet64 submit`'s orchestration: which label shards to run, the three jobs of the
pipeline with their own time limits, and their scripts as an afterok chain for --dry-run
(imnet64.cluster.slurm_submit.submit_chain submits the chain).

imnet64.cluster.slurm_stage_jobs builds each stage's Job from its options (checked with
imnet64.cluster.sbatch_values), imnet64.cluster.slurm_submit renders its script and talks to
sbatch; the CLI (imnet64_cli.submit_cmd) only parses options and shows what this returns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from imnet64.cluster import slurm_submit as sb
from imnet64.cluster.sbatch_values import check_text
from imnet64.cluster.slurm_stage_jobs import Common, LabelSettings, ShardSettings, TrainSettings
from imnet64.errors import UserError


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


def plan_label(common: Common, label: LabelSettings, missing_only: bool) -> LabelPlan:
    if not missing_only:
        return LabelPlan(label.job(common))
    if label.shards is None or not label.label_dir:
        raise UserError("--missing-only needs --label-dir and --shards")
    check_text("--label-dir", label.label_dir)
    only = missing_label_shards(label.label_dir, label.shards)
    return LabelPlan(label.job(common, only) if only else None, only)


def _with_time(common: Common, stage: str, time_limit: str | None) -> Common:
    """`common` with the stage's own time limit (--label-time, ...) when one is given."""
    if time_limit is None:
        return common
    return dataclasses.replace(common, time=time_limit, time_option=f"--{stage}-time")


def pipeline_jobs(common: Common, label: LabelSettings, shard: ShardSettings,
                  train: TrainSettings, stage_times: Mapping[str, str | None]) -> list[sb.Job]:
    """label (array) -> shard-records -> train: one Job per stage, in sb.STAGES order."""
    if common.template is not None:
        check_text("--template", common.template)
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
