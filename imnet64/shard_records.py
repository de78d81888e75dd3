"""`imnet64 shard-records`: labeled images -> shuffled, class-balanced TFRecord shards + manifest.

Flow (every process computes the same plan, a pure function of inputs and options):
1. up to date? If OUT_DIR/dataset.json names the same source fingerprint and options and its
   shard files are all there, nothing is done.
2. scan SOURCE (label_source), filter, split and plan shards (split).
3. write shards: shard job j (train shards, then val shards) belongs to rank j % ranks
   (Slurm `SLURM_PROCID/SLURM_NTASKS`, or one rank); a rank's jobs go to `num_workers`
   processes. Each finished shard leaves `OUT_DIR/.shards/<shard>.json` (examples, bytes,
   sha256, class counts, plan hash); a re-run skips shards whose sidecar matches the plan.
4. finalize: whichever process sees every sidecar of the plan writes dataset.json (last,
   atomically; identical bytes whoever writes it) and removes shard files of older plans.
   Under srun, rank 0 also waits for the other ranks' shards, so the manifest exists when
   the step ends; if a rank died, re-running the command (any rank count) completes the set.
The output depends on nothing else: not the worker or rank count, not the clock.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from imnet64 import atomic, image64
from imnet64.errors import UserError
from imnet64.label_source import (
    ItemReader,
    Source,
    SourceRef,
    labels_dir,
    scan_source,
    source_fingerprint,
)
from imnet64.manifest import FORMAT, MANIFEST_NAME, VERSION
from imnet64.split import (
    SPLITS,
    Example,
    KeptClass,
    ShardPlan,
    parse_classes_option,
    plan_shards,
    select,
    split_examples,
)
from imnet64.world import ShardSlot

SIDECAR_DIR = ".shards"
SHARD_NAME_RE = re.compile(r"^(train|val)-\d{5}-of-\d{5}\.tfrecord$")
ENCODINGS = ("png", "raw")

ProgressFn = Callable[[int, int], None]
LogFn = Callable[[str], None]


@dataclass(frozen=True)
class ShardOptions:
    """The options that define the output (they go into the manifest)."""

    val_fraction: float = 0.1
    seed: int = 0
    min_confidence: float | None = None
    classes: int | list[str] | None = None  # K most frequent, or names
    max_per_class: int | None = None
    shard_size_mb: float = 128.0  # MiB
    encoding: str = "png"

    @classmethod
    def build(cls, classes: str | None = None, **kwargs: Any) -> ShardOptions:
        """From CLI-style values (`classes` as "K" or "name,name"), checked."""
        opts = cls(classes=parse_classes_option(classes), **kwargs)
        opts.check()
        return opts

    def check(self) -> None:
        if self.encoding not in ENCODINGS:
            raise UserError(f"--encoding must be png or raw, not {self.encoding!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UserError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.min_confidence is not None and not 0.0 <= self.min_confidence <= 1.0:
            raise UserError(f"--min-confidence must be in [0, 1], got {self.min_confidence}")
        if self.max_per_class is not None and self.max_per_class < 1:
            raise UserError(f"--max-per-class must be at least 1, got {self.max_per_class}")
        if not self.shard_size_mb > 0:
            raise UserError(f"--shard-size-mb must be positive, got {self.shard_size_mb}")

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ShardResult:
    out_dir: Path
    status: str  # "up-to-date", "complete" (manifest written), "partial" (other ranks pending)
    shards_written: int = 0
    shards_skipped: int = 0  # already done by an earlier run
    examples_written: int = 0
    manifest: dict[str, Any] | None = None
    messages: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- writing one shard


@dataclass(frozen=True)
class ShardJob:
    """One shard to write; picklable, so it can go to a worker process."""

    ref: SourceRef
    out_dir: str
    plan: ShardPlan
    plan_hash: str
    encoding: str
    classes: tuple[KeptClass, ...]


def _sidecar_path(out_dir: str | Path, shard_file: str) -> Path:
    return Path(out_dir) / SIDECAR_DIR / f"{shard_file}.json"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _dataset_example(job: ShardJob, ex: Example, original, label_of_teacher: dict[int, int]):
    from imnet64.records import DatasetExample

    kept = job.classes[ex.label]
    if job.ref.kind == "labels":
        data, filename = original.encoded, original.filename
        teacher_label, confidence = original.label, original.confidence
        topk_ids, topk_probs = original.topk_ids, original.topk_probs
    else:  # class folders: the folder is the label; soft label = one-hot
        data, filename = original, ex.item.filename
        teacher_label, confidence = kept.teacher_id, 1.0
        topk_ids, topk_probs = (kept.teacher_id,), (1.0,)
    try:
        encoded, converted = image64.encode64(data, job.encoding)
        if not converted and job.ref.kind != "labels":
            image64.check_decodes(data)  # the teacher never decoded folder files
    except image64.ImageError as e:
        raise UserError(f"cannot decode {filename} from SOURCE: {e}") from None
    if job.ref.kind == "labels":
        topk_labels = tuple(label_of_teacher.get(t, -1) for t in topk_ids)
    else:
        topk_labels = (ex.label,)
    example = DatasetExample(
        encoded=encoded,
        encoding=job.encoding,
        filename=filename,
        label=ex.label,
        class_name=kept.name,
        teacher_label=teacher_label,
        confidence=confidence,
        topk_ids=tuple(topk_ids),
        topk_probs=tuple(topk_probs),
        topk_labels=topk_labels,
    )
    return example, converted


def write_shard(job: ShardJob, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write one shard file and then its sidecar; returns the sidecar's content."""
    import imnet64  # noqa: F401  (worker processes: Keras 2 before TensorFlow)
    from imnet64.records import serialize_dataset_example

    import tensorflow as tf

    out = Path(job.out_dir) / job.plan.file
    label_of_teacher = {c.teacher_id: c.id for c in job.classes if c.teacher_id >= 0}
    class_counts = [0] * len(job.classes)
    converted = 0
    examples = job.plan.examples
    # Read in storage order (part, offset / file name), write in the plan's shuffled order:
    # forward reads through each label part instead of a random seek per image. The
    # shard's serialized records (about --shard-size-mb) are held meanwhile.
    serialized: list[bytes] = [b""] * len(examples)
    storage_order = sorted(
        range(len(examples)),
        key=lambda i: (examples[i].item.part, examples[i].item.offset, examples[i].item.filename),
    )
    reader = ItemReader(job.ref)
    try:
        for n, i in enumerate(storage_order, 1):
            ex = examples[i]
            example, was_converted = _dataset_example(
                job, ex, reader.read(ex.item), label_of_teacher
            )
            serialized[i] = serialize_dataset_example(example)
            class_counts[ex.label] += 1
            converted += was_converted
            if progress and n % 256 == 0:
                progress(256)
    finally:
        reader.close()
    with atomic.atomic_path(out) as tmp:
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for record in serialized:
                writer.write(record)
        sha, size = _file_sha256(tmp), tmp.stat().st_size
    if progress:
        progress(len(examples) % 256)
    sidecar = {
        "file": job.plan.file,
        "examples": len(job.plan.examples),
        "bytes": size,
        "sha256": sha,
        "class_counts": class_counts,
        "converted": converted,
        "plan": job.plan_hash,
    }
    atomic.write_json(_sidecar_path(job.out_dir, job.plan.file), sidecar)
    return sidecar


def _write_in_worker(job: ShardJob) -> tuple[int, dict[str, Any]]:
    return len(job.plan.examples), write_shard(job)


# ---------------------------------------------------------------- plan, state, manifest


def _plan_hash(base: str, plan: ShardPlan) -> str:
    h = hashlib.sha256(base.encode())
    h.update(plan.file.encode())
    for ex in plan.examples:
        h.update(f"\n{ex.label}\t{ex.item.filename}".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _done_sidecar(out_dir: Path, plan: ShardPlan, plan_hash: str) -> dict[str, Any] | None:
    """The sidecar of a shard finished for exactly this plan, else None."""
    path = _sidecar_path(out_dir, plan.file)
    try:
        sidecar = atomic.read_json(path)
        if sidecar.get("plan") != plan_hash:
            return None
        if (out_dir / plan.file).stat().st_size != sidecar["bytes"]:
            return None
    except (OSError, ValueError, KeyError):
        return None
    return sidecar


def _manifest_is_current(out_dir: Path, fingerprint: str, options: ShardOptions) -> dict | None:
    path = out_dir / MANIFEST_NAME
    try:
        raw = atomic.read_json(path)
    except (OSError, ValueError):
        return None
    try:
        if raw.get("options") != options.as_json():
            return None
        if raw["source_info"]["fingerprint"] != fingerprint:
            return None
        for split in raw["splits"].values():
            for shard in split["shards"]:
                if (out_dir / shard["file"]).stat().st_size != shard["bytes"]:
                    return None
    except (OSError, KeyError, TypeError):
        return None
    return raw


def _build_manifest(
    source: Source,
    classes: tuple[KeptClass, ...],
    plans: dict[str, list[ShardPlan]],
    sidecars: dict[str, dict[str, Any]],
    options: ShardOptions,
    dropped: dict[str, int],
) -> dict[str, Any]:
    splits = {}
    converted = 0
    for split in SPLITS:
        class_counts = [0] * len(classes)
        shards = []
        for plan in plans[split]:
            side = sidecars[plan.file]
            shards.append({k: side[k] for k in ("file", "examples", "bytes", "sha256")})
            class_counts = [a + b for a, b in zip(class_counts, side["class_counts"])]
            converted += side["converted"]
        splits[split] = {
            "count": sum(s["examples"] for s in shards),
            "class_counts": class_counts,
            "shards": shards,
        }
    total = sum(s["count"] for s in splits.values())
    return {
        "format": FORMAT,
        "version": VERSION,
        "encoding": options.encoding,
        "image_size": image64.SIZE,
        "classes": [
            {"id": c.id, "name": c.name, "teacher_id": c.teacher_id if c.teacher_id >= 0 else None}
            for c in classes
        ],
        "splits": splits,
        "teacher": source.teacher,
        "source": str(Path(source.root).resolve()),
        "source_info": {"kind": source.kind, "fingerprint": source.fingerprint, **source.info},
        "options": options.as_json(),
        "stats": {
            "source_images": len(source.items),
            "examples": total,
            "dropped": dropped,
            # images that were not 8-bit 64x64 PNGs: decoded, converted to RGB, resized
            "converted": converted,
            "kept_original_bytes": total - converted if options.encoding == "png" else 0,
        },
    }


def _remove_stale_outputs(out_dir: Path, keep: set[str]) -> None:
    """Shard files (and sidecars) of earlier plans in OUT_DIR: only names we write."""
    for path in out_dir.iterdir():
        if SHARD_NAME_RE.match(path.name) and path.name not in keep:
            path.unlink(missing_ok=True)
    sidecars = out_dir / SIDECAR_DIR
    if sidecars.is_dir():
        for path in sidecars.iterdir():
            if path.name.endswith(".json") and path.name[: -len(".json")] not in keep:
                path.unlink(missing_ok=True)


def _check_out_dir(source: Path, out_dir: Path) -> None:
    """OUT_DIR must not land inside what is read: a class-folder tree would then hold
    our shards as a "class" on the next run; a labels/ folder holds only label parts."""
    protected = (labels_dir(source) or source).resolve()
    out = out_dir.resolve()
    if out == protected or protected in out.parents:
        raise UserError(f"OUT_DIR {out_dir} must not be inside SOURCE {protected}")
    if out.exists() and not out.is_dir():
        raise UserError(f"OUT_DIR {out_dir} exists and is not a folder")


# ---------------------------------------------------------------- the command


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
) -> ShardResult:
    """Write OUT_DIR's shards of this rank (`slot`, default one rank) and, once all shards of
    the plan exist, OUT_DIR/dataset.json. `wait_for_ranks` (default: under srun, on rank 0)
    waits for the other ranks' shards before returning."""
    options.check()
    source, out_dir = Path(source), Path(out_dir)
    slot = slot or ShardSlot(0, 1, "default")
    if num_workers < 1:
        raise UserError(f"--num-workers must be at least 1, got {num_workers}")
    log = log or (lambda message: None)
    if not source.exists():
        raise UserError(f"SOURCE {source} does not exist")
    _check_out_dir(source, out_dir)

    fingerprint = source_fingerprint(source, allow_partial)
    current = _manifest_is_current(out_dir, fingerprint, options)
    if current is not None:
        return ShardResult(out_dir, "up-to-date", manifest=current)

    log(f"reading the catalog of {source}")
    scanned = scan_source(source, allow_partial)
    selection = select(
        scanned,
        min_confidence=options.min_confidence,
        classes=options.classes,
        max_per_class=options.max_per_class,
        seed=options.seed,
    )
    split = split_examples(selection, options.val_fraction, options.seed)
    shard_bytes = int(options.shard_size_mb * 2**20)
    plans = {
        s: plan_shards(s, split[s], options.encoding, shard_bytes, options.seed) for s in SPLITS
    }
    all_plans = [p for s in SPLITS for p in plans[s]]
    base = json.dumps(
        [scanned.fingerprint, options.encoding, [asdict(c) for c in selection.classes]],
        sort_keys=True,
    )
    hashes = {p.file: _plan_hash(base, p) for p in all_plans}

    out_dir.mkdir(parents=True, exist_ok=True)
    # an older manifest describes other shards: it must not outlive their replacement
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)

    mine = [p for j, p in enumerate(all_plans) if j % slot.count == slot.index]
    todo = [p for p in mine if _done_sidecar(out_dir, p, hashes[p.file]) is None]
    log(
        f"{len(scanned.items)} images in SOURCE, {len(selection.examples)} kept in "
        f"{len(selection.classes)} classes: "
        + ", ".join(f"{s} {len(split[s])} in {len(plans[s])} shard(s)" for s in SPLITS)
        + f"; this process writes {len(todo)} of them ({len(mine) - len(todo)} already done)"
    )
    result = ShardResult(out_dir, "partial", shards_skipped=len(mine) - len(todo))
    ref = SourceRef.of(scanned)
    jobs = [
        ShardJob(ref, str(out_dir), p, hashes[p.file], options.encoding, selection.classes)
        for p in todo
    ]
    total = sum(len(p.examples) for p in todo)
    started = time.monotonic()
    _run_jobs(jobs, num_workers, total, progress, result)
    own_seconds = time.monotonic() - started

    wait = wait_for_ranks
    if wait is None:
        wait = slot.source == "slurm-rank" and slot.count > 1 and slot.index == 0
    sidecars = _wait_for_all(out_dir, all_plans, hashes, wait, own_seconds, poll_seconds, log)
    if sidecars is None:
        result.messages.append(
            f"rank {slot.index}/{slot.count}: my shards are done; the manifest is written by "
            "the process that finishes the last shard (or re-run shard-records to complete)"
        )
        return result
    manifest = _build_manifest(
        scanned, selection.classes, plans, sidecars, options, selection.dropped
    )
    atomic.write_json(out_dir / MANIFEST_NAME, manifest)
    _remove_stale_outputs(out_dir, set(hashes))
    result.status, result.manifest = "complete", manifest
    return result


def _run_jobs(
    jobs: list[ShardJob],
    num_workers: int,
    total: int,
    progress: ProgressFn | None,
    result: ShardResult,
) -> None:
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

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
    plans: list[ShardPlan],
    hashes: dict[str, str],
    wait: bool,
    own_seconds: float,
    poll_seconds: float,
    log: LogFn,
) -> dict[str, dict] | None:
    """Every plan's sidecar, or None if some are missing (after waiting, if asked to).

    Waiting gives up when no new shard has appeared for max(10 min, 3x our own writing
    time): a rank has probably died, and a re-run will finish its shards."""
    stall_limit = max(600.0, 3 * own_seconds)
    last_change, last_done = time.monotonic(), -1
    while True:
        sidecars = {p.file: _done_sidecar(out_dir, p, hashes[p.file]) for p in plans}
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
