"""`imnet64 shard-records`: labeled images -> shuffled, class-balanced TFRecord shards + manifest.

Flow (every process computes the same plan, a pure function of inputs and options):
1. up to date? If OUT_DIR/dataset.json names the same source fingerprint and options and its
   shard files are all there, nothing is done.
2. scan SOURCE (label_source), filter, split and plan shards (plan, split).
3. write shards (shard_file): shard job j (train shards, then val shards) belongs to rank
   j % ranks (Slurm `SLURM_PROCID/SLURM_NTASKS`, or one rank); a rank's jobs go to
   `num_workers` processes. Each finished shard leaves `OUT_DIR/.shards/<shard>.json`
   (examples, bytes, sha256, class counts, plan hash); a re-run skips shards whose sidecar
   matches the plan.
4. finalize: whichever process sees every sidecar of the plan writes dataset.json
   (manifest_write; last, atomically; identical bytes whoever writes it) and removes shard
   files of older plans (out_dir_cleanup).
   Under srun, rank 0 also waits for the other ranks' shards, so the manifest exists when
   the step ends; if a rank died, re-running the command (any rank count) completes the set.
The output depends on nothing else: not the worker or rank count, not the clock.

What OUT_DIR may already hold, and what is refused or removed, is out_dir's (and
out_dir_cleanup's) to say; this module only runs the steps in order.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imnet64 import disk_errors
from imnet64.cluster import folder_lock, provenance
from imnet64.cluster.environment import ShardSlot
from imnet64.errors import UserError
from imnet64.formats.manifest import write_run_sidecar
from imnet64.formats.shard_sidecar import ShardSidecar
from imnet64.progress import LogFn, ProgressFn
from imnet64.records.manifest_write import write_dataset_manifest
from imnet64.records.options import ShardOptions
from imnet64.records.out_dir import (
    check_before_writing,
    check_out_dir,
    check_plan_against,
    claim_out_dir,
    first_names,
    manifest_is_current,
    read_out_dir,
)
from imnet64.records.out_dir_cleanup import remove_stale_outputs, remove_temps
from imnet64.records.plan import DatasetPlan, plan_dataset
from imnet64.records.progress_count import ProgressCount
from imnet64.records.shard_file import ShardJob, finished_sidecar, write_shard
from imnet64.records.source import SourceRef, source_fingerprint
from imnet64.records.space import shard_space_needed
from imnet64.records.split import PlannedShard


@dataclass
class ShardResult:
    out_dir: Path
    status: str  # "up-to-date", "complete" (manifest written), "partial" (other ranks pending)
    shards_written: int = 0
    shards_skipped: int = 0  # already done by an earlier run
    examples_written: int = 0
    manifest: dict[str, Any] | None = None
    messages: list[str] = field(default_factory=list)


def _write_in_worker(job: ShardJob) -> tuple[int, ShardSidecar]:
    return len(job.plan.examples), write_shard(job)


def _write_my_shards(out_dir: Path, plan: DatasetPlan, options: ShardOptions, slot: ShardSlot,
                     num_workers: int, progress: ProgressFn | None, log: LogFn) -> ShardResult:
    """Write the shards of the plan that are this rank's and not done yet."""
    mine = [p for j, p in enumerate(plan.all_shards) if j % slot.count == slot.index]
    # this process alone writes its shards, so their temporaries are leftovers of a kill
    removed = remove_temps(out_dir, {p.file for p in mine})
    todo = [p for p in mine if finished_sidecar(out_dir, p, plan.hashes[p.file]) is None]
    log(f"{plan.describe()}; this process writes {len(todo)} of them "
        f"({len(mine) - len(todo)} already done)")
    result = ShardResult(out_dir, "partial", shards_skipped=len(mine) - len(todo))
    if removed:
        log(f"removed {removed} temporary file(s) an interrupted run left")
    ref = SourceRef.of(plan.source)
    jobs = [
        ShardJob(ref, str(out_dir), p, plan.hashes[p.file], options.encoding,
                 plan.selection.classes, options.labels)
        for p in todo
    ]
    _run_jobs(jobs, num_workers, sum(len(p.examples) for p in todo), progress, result)
    return result


def _finish(out_dir: Path, plan: DatasetPlan, sidecars: dict[str, ShardSidecar],
            options: ShardOptions, recorded: dict[str, int | None], started_at: float,
            result: ShardResult) -> None:
    """Every shard is done: write the manifest, then remove what older plans left."""
    manifest = write_dataset_manifest(out_dir, plan.source, plan.selection.classes,
                                      plan.shards, sidecars, options, plan.selection.dropped)
    write_run_sidecar(out_dir, provenance.collect())  # run fields: not in dataset.json
    kept = remove_stale_outputs(out_dir, set(plan.hashes), recorded)
    if kept:
        result.messages.append(
            f"kept {first_names(kept)} in {out_dir}: named like a shard, but no record says "
            "imnet64 wrote it as it is now"
        )
    # every shard of the plan is done, so no writer of a shard is left; a manifest
    # temporary from before this run started is a killed run's
    remove_temps(out_dir, None, manifest_older_than=started_at)
    result.status, result.manifest = "complete", manifest


def _check_arguments(source: Path, out_dir: Path, options: ShardOptions,
                     num_workers: int) -> None:
    options.check()
    if num_workers < 1:
        raise UserError(f"--num-workers must be at least 1, got {num_workers}")
    if not source.exists():
        raise UserError(f"SOURCE {source} does not exist")
    check_out_dir(source, out_dir)


@disk_errors.reports("the dataset's shards", lambda a: a["out_dir"],
                     lambda a: shard_space_needed(a["source"], a["out_dir"]))
def shard_records(
    source: str | Path,
    out_dir: str | Path,
    options: ShardOptions,
    *,
    allow_partial: bool = False,
    num_workers: int = 1,
    slot: ShardSlot | None = None,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
    wait_for_ranks: bool | None = None,
    poll_seconds: float = 5.0,
    force: bool = False,
) -> ShardResult:
    """Write OUT_DIR's shards of this rank (`slot`, default one rank) and, once all shards of
    the plan exist, OUT_DIR/dataset.json. `wait_for_ranks` (default: under srun, on rank 0)
    waits for the other ranks' shards before returning. `force` replaces another dataset
    in OUT_DIR (its recorded files only) and writes beside files imnet64 did not write."""
    source, out_dir = Path(source), Path(out_dir)
    _check_arguments(source, out_dir, options, num_workers)
    slot = slot or ShardSlot(0, 1, "default")
    # one writer per OUT_DIR; the ranks of one job each lock their own part of it
    part = f"rank-{slot.index}-of-{slot.count}" if slot.count > 1 else None
    with folder_lock.held(out_dir, "imnet64 shard-records", part=part):
        return _shard_records(source, out_dir, options, allow_partial, num_workers, slot,
                              progress, log or (lambda message: None), wait_for_ranks,
                              poll_seconds, force)


def _shard_records(source: Path, out_dir: Path, options: ShardOptions, allow_partial: bool,
                   num_workers: int, slot: ShardSlot, progress: ProgressFn | None, log: LogFn,
                   wait_for_ranks: bool | None, poll_seconds: float,
                   force: bool) -> ShardResult:
    started_at = time.time()

    fingerprint = source_fingerprint(source, allow_partial)
    current = manifest_is_current(out_dir, fingerprint, options)
    if current is not None:
        return ShardResult(out_dir, "up-to-date", manifest=current)
    state = read_out_dir(out_dir)
    check_before_writing(out_dir, state, fingerprint, options, force)

    log(f"reading the catalog of {source}")
    plan = plan_dataset(source, options, allow_partial)
    check_plan_against(out_dir, state, plan.hashes, force)

    claim_out_dir(out_dir, state)

    started = time.monotonic()
    result = _write_my_shards(out_dir, plan, options, slot, num_workers, progress, log)
    own_seconds = time.monotonic() - started

    wait = wait_for_ranks
    if wait is None:
        wait = slot.siblings_run_together and slot.index == 0
    sidecars = _wait_for_all(out_dir, plan.all_shards, plan.hashes, wait, own_seconds,
                             poll_seconds, log)
    if sidecars is None:
        result.messages.append(
            f"rank {slot.index}/{slot.count}: my shards are done; the manifest is written by "
            "the process that finishes the last shard (or re-run shard-records to complete)"
        )
        return result
    _finish(out_dir, plan, sidecars, options, state.recorded(), started_at, result)
    return result


def _run_jobs(
    jobs: list[ShardJob],
    num_workers: int,
    total: int,
    progress: ProgressFn | None,
    result: ShardResult,
) -> None:
    advance = ProgressCount(progress, total)
    if progress:
        progress(0, total)
    workers = min(num_workers, len(jobs))
    if workers <= 1:
        for job in jobs:
            write_shard(job, advance)
            result.shards_written += 1
    else:
        # spawn, not fork: the parent may already hold TensorFlow's threads
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers) as pool:
            for n, _sidecar in pool.imap_unordered(_write_in_worker, jobs):
                advance(n)
                result.shards_written += 1
    result.examples_written = total


def _wait_for_all(
    out_dir: Path,
    plans: list[PlannedShard],
    hashes: dict[str, str],
    wait: bool,
    own_seconds: float,
    poll_seconds: float,
    log: LogFn,
) -> dict[str, ShardSidecar] | None:
    """Every plan's sidecar, or None if some are missing (after waiting, if asked to).

    Waiting gives up when no new shard has appeared for max(10 min, 3x our own writing
    time): a rank has probably died, and a re-run will finish its shards."""
    stall_limit = max(600.0, 3 * own_seconds)
    last_change, last_done = time.monotonic(), -1
    while True:
        sidecars = {p.file: finished_sidecar(out_dir, p, hashes[p.file]) for p in plans}
        missing = [f for f, s in sidecars.items() if s is None]
        if not missing:
            return sidecars  # type: ignore[return-value]
        if not wait:
            return None
        done = len(plans) - len(missing)
        if done != last_done:
            log(
                f"waiting for {len(missing)} shard(s) written by other ranks "
                f"({done}/{len(plans)} done)"
            )
            last_done, last_change = done, time.monotonic()
        elif time.monotonic() - last_change > stall_limit:
            raise UserError(
                f"{len(missing)} shard(s) were not written by the other ranks (first: "
                f"{missing[0]}); re-run shard-records to complete them"
            )
        time.sleep(poll_seconds)
