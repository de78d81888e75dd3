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

OUT_DIR may hold only what this dataset resumes from. Another dataset there (another
source or options), or files imnet64 did not write, are refused before anything is written
unless `force`; even then only files imnet64 recorded writing (shards listed by the old
dataset.json or by a .shards/ sidecar, their sidecars, dataset.json) are removed, and a
file no record covers is never overwritten. Temporaries a killed run left (atomic.py's
names, for shard, sidecar and manifest names only) are removed by the next run.
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

from imnet64 import atomic, disk_errors
from imnet64.cluster import folder_lock, provenance
from imnet64.cluster.environment import ShardSlot
from imnet64.errors import UserError
from imnet64.formats import image64
from imnet64.formats import provenance as provenance_schema
from imnet64.formats.manifest import (
    FORMAT,
    MANIFEST_NAME,
    RUN_SIDECAR,
    ClassInfo,
    SplitInfo,
    write_manifest,
    write_run_sidecar,
)
from imnet64.formats.shard_sidecar import SIDECAR_DIR, ShardSidecar, sidecar_path
from imnet64.progress import LogFn, ProgressFn
from imnet64.records.options import ShardOptions
from imnet64.records.progress_count import ProgressCount
from imnet64.records.source import (
    ItemReader,
    Source,
    SourceRef,
    keyed_by_truth,
    labels_dir,
    scan_source,
    source_fingerprint,
)
from imnet64.records.space import shard_space_needed
from imnet64.records.split import (
    SPLITS,
    Example,
    KeptClass,
    PlannedShard,
    Selection,
    plan_shards,
    select,
    split_examples,
)

SHARD_NAME_RE = re.compile(r"^(train|val)-\d{5}-of-\d{5}\.tfrecord$")


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
    plan: PlannedShard
    plan_hash: str
    encoding: str
    classes: tuple[KeptClass, ...]
    labels: str = "teacher"  # ShardOptions.labels


def _dataset_example(job: ShardJob, ex: Example, original, label_of_teacher: dict[int, int]):
    from imnet64.formats.tfrecord_schema import DatasetExample

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
    truth = original.truth if job.ref.kind == "labels" else None
    if job.labels == "truth":  # the supervised baseline: targets are the true class alone
        topk_ids, topk_probs, confidence = (truth,), (1.0,), 1.0
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
        truth=truth,
        truth_label=None if truth is None else label_of_teacher.get(truth, -1),
    )
    return example, converted


def write_shard(job: ShardJob, progress: Callable[[int], None] | None = None) -> ShardSidecar:
    """Write one shard file and then its sidecar; returns the sidecar's content."""
    from imnet64.formats.tfrecord_schema import serialize_dataset_example

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
        sha, size = atomic.sha256_file(tmp), tmp.stat().st_size
    if progress:
        progress(len(examples) % 256)
    sidecar = ShardSidecar(file=job.plan.file, examples=len(examples), bytes=size, sha256=sha,
                           class_counts=tuple(class_counts), converted=converted,
                           plan=job.plan_hash)
    atomic.write_json(sidecar_path(job.out_dir, job.plan.file), sidecar.to_json())
    return sidecar


def _write_in_worker(job: ShardJob) -> tuple[int, ShardSidecar]:
    return len(job.plan.examples), write_shard(job)


# ---------------------------------------------------------------- plan, state, manifest


def _plan_hash(base: str, plan: PlannedShard) -> str:
    h = hashlib.sha256(base.encode())
    h.update(plan.file.encode())
    for ex in plan.examples:
        h.update(f"\n{ex.label}\t{ex.item.filename}".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _done_sidecar(out_dir: Path, plan: PlannedShard, plan_hash: str) -> ShardSidecar | None:
    """The sidecar of a shard finished for exactly this plan, else None."""
    try:
        sidecar = ShardSidecar.from_json(atomic.read_json(sidecar_path(out_dir, plan.file)))
        if sidecar.plan != plan_hash:
            return None
        if (out_dir / plan.file).stat().st_size != sidecar.bytes:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return sidecar


def _manifest_is_current(out_dir: Path, fingerprint: str, options: ShardOptions) -> dict | None:
    path = out_dir / MANIFEST_NAME
    try:
        raw = atomic.read_json(path)
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict) or not _same_dataset(raw, fingerprint, options):
        return None
    return raw if _shards_as_listed(out_dir, raw) else None


def _shards_as_listed(out_dir: Path, manifest: dict[str, Any]) -> bool:
    """Every shard file the manifest lists is there, of the size it lists."""
    try:
        return all((out_dir / shard["file"]).stat().st_size == shard["bytes"]
                   for split in manifest["splits"].values() for shard in split["shards"])
    except (OSError, KeyError, TypeError):
        return False


def _write_manifest(
    out_dir: Path,
    source: Source,
    classes: tuple[KeptClass, ...],
    plans: dict[str, list[PlannedShard]],
    sidecars: dict[str, ShardSidecar],
    options: ShardOptions,
    dropped: dict[str, int],
) -> dict[str, Any]:
    splits: dict[str, SplitInfo] = {}
    for split in SPLITS:
        done = [sidecars[plan.file] for plan in plans[split]]
        class_counts = [0] * len(classes)
        for side in done:
            class_counts = [a + b for a, b in zip(class_counts, side.class_counts)]
        splits[split] = SplitInfo(count=sum(s.examples for s in done),
                                  class_counts=tuple(class_counts),
                                  shards=tuple(s.shard_info for s in done))
    total = sum(s.count for s in splits.values())
    converted = sum(s.converted for s in sidecars.values())
    return write_manifest(
        out_dir,
        encoding=options.encoding,
        classes=[ClassInfo(c.id, c.name, c.teacher_id if c.teacher_id >= 0 else None)
                 for c in classes],
        splits=splits,
        teacher=source.teacher,
        source=str(Path(source.root).resolve()),
        options=options.as_json(),
        extra={
            "source_info": {"kind": source.kind, "fingerprint": source.fingerprint,
                            **source.info},
            # code and teacher only: the same for any number of ranks or workers (where it
            # ran goes to dataset.run.json)
            provenance_schema.KEY: provenance_schema.stable(
                provenance.collect(source.teacher, source.teacher_sha256)),
            "stats": {
                "source_images": len(source.items),
                "examples": total,
                "dropped": dropped,
                # images that were not 8-bit 64x64 PNGs: decoded, converted to RGB, resized
                "converted": converted,
                "kept_original_bytes": total - converted if options.encoding == "png" else 0,
            },
        },
    )


# ---------------------------------------------------------------- what OUT_DIR holds


@dataclass
class OutDirState:
    """What OUT_DIR holds before a run, sorted by who wrote it. Only imnet64's own records
    (dataset.json, .shards/ sidecars) make a file imnet64's."""

    manifest: dict[str, Any] | None = None  # an imnet64 manifest
    foreign_manifest: bool = False  # a dataset.json that is not one
    has_sidecar_dir: bool = False
    sidecars: dict[str, dict[str, Any]] = field(default_factory=dict)  # shard file -> sidecar
    shard_named: list[str] = field(default_factory=list)  # files named like our shards
    foreign: list[str] = field(default_factory=list)  # anything else imnet64 did not write

    @property
    def is_dataset_folder(self) -> bool:
        """A folder shard-records has written into (and files named like shards are its)."""
        return self.manifest is not None or self.has_sidecar_dir

    def recorded(self) -> dict[str, int | None]:
        """Shard files a record says imnet64 wrote -> their recorded size."""
        files: dict[str, int | None] = {}
        for split in (self.manifest or {}).get("splits", {}).values():
            for shard in split.get("shards", []):
                files[shard["file"]] = shard.get("bytes")
        for name, sidecar in self.sidecars.items():
            files.setdefault(name, sidecar.get("bytes"))
        return files


def _read_manifest_file(path: Path) -> dict[str, Any] | None:
    try:
        raw = atomic.read_json(path)
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) and raw.get("format") == FORMAT else None


def _read_sidecars(folder: Path) -> dict[str, dict[str, Any]]:
    sidecars = {}
    for path in sorted(folder.iterdir()):
        shard = path.name[: -len(".json")] if path.name.endswith(".json") else ""
        if not SHARD_NAME_RE.match(shard):
            continue
        try:
            sidecar = atomic.read_json(path)
        except (OSError, ValueError):
            continue
        if isinstance(sidecar, dict) and sidecar.get("file") == shard:
            sidecars[shard] = sidecar
    return sidecars


def _is_own_temp(name: str, sidecar: bool = False) -> bool:
    """A temporary atomic.py names after a file shard-records writes."""
    target = atomic.temp_target(name)
    if target is None:
        return False
    if sidecar:
        return target.endswith(".json") and bool(SHARD_NAME_RE.match(target[: -len(".json")]))
    return target in (MANIFEST_NAME, RUN_SIDECAR) or bool(SHARD_NAME_RE.match(target))


def read_out_dir(out_dir: Path) -> OutDirState:
    state = OutDirState()
    if not out_dir.is_dir():
        return state
    for path in sorted(out_dir.iterdir()):
        name = path.name
        if name == MANIFEST_NAME:
            state.manifest = _read_manifest_file(path) if path.is_file() else None
            state.foreign_manifest = state.manifest is None
        elif name == RUN_SIDECAR and path.is_file():
            pass  # dataset.json's sidecar: ours when dataset.json is
        elif name == SIDECAR_DIR and path.is_dir():
            state.has_sidecar_dir = True
            state.sidecars = _read_sidecars(path)
        elif SHARD_NAME_RE.match(name) and path.is_file():
            state.shard_named.append(name)
        elif not _is_own_temp(name) and not folder_lock.is_lock_file(name):
            state.foreign.append(name)
    return state


def _names(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _recorded_options(manifest: dict[str, Any]) -> Any:
    """The manifest's options; those written before --labels existed were teacher labels."""
    old = manifest.get("options")
    return {"labels": "teacher", **old} if isinstance(old, dict) else old


def _same_dataset(manifest: dict[str, Any], fingerprint: str, options: ShardOptions) -> bool:
    try:
        return (_recorded_options(manifest) == options.as_json()
                and manifest["source_info"]["fingerprint"] == fingerprint)
    except (KeyError, TypeError):
        return False


def _describe_manifest(manifest: dict[str, Any], options: ShardOptions) -> str:
    """One line on the dataset a manifest describes and how it differs from this run."""
    try:
        splits = manifest["splits"].values()
        examples = sum(s["count"] for s in splits)
        shards = sum(len(s["shards"]) for s in splits)
        what = f"{examples} examples in {shards} shard(s) from {manifest.get('source')}"
    except (KeyError, TypeError, AttributeError):
        what = "unreadable details"
    old = _recorded_options(manifest) if isinstance(manifest.get("options"), dict) else {}
    new = options.as_json()
    changed = [f"{k} {old.get(k)!r} -> {new[k]!r}" for k in new if old.get(k) != new[k]]
    diff = ("options differ: " + ", ".join(changed)) if changed else "SOURCE has changed since"
    return f"{what}; {diff}"


def check_before_writing(
    out_dir: Path, state: OutDirState, fingerprint: str, options: ShardOptions, force: bool
) -> None:
    """Refuse what writing into OUT_DIR would replace without asking (before any scan)."""
    sidecar_dir = out_dir / SIDECAR_DIR
    if sidecar_dir.exists() and not sidecar_dir.is_dir():
        raise UserError(f"OUT_DIR {out_dir} holds a file {SIDECAR_DIR}, where imnet64 keeps "
                        "its records: move it away or choose another folder")
    if state.foreign_manifest:
        raise UserError(
            f"OUT_DIR {out_dir} holds a {MANIFEST_NAME} that is not an imnet64 manifest; "
            "imnet64 will not replace it: move it away or choose another folder"
        )
    if force:
        return
    if state.manifest is not None and not _same_dataset(state.manifest, fingerprint, options):
        raise UserError(
            f"OUT_DIR {out_dir} holds another dataset ({MANIFEST_NAME}: "
            f"{_describe_manifest(state.manifest, options)}); pass --force to replace it "
            "(only its shards and manifest are removed) or choose another folder"
        )
    if not state.is_dataset_folder and (state.foreign or state.shard_named):
        names = sorted(state.foreign + state.shard_named)
        raise UserError(
            f"OUT_DIR {out_dir} is not empty and holds files imnet64 did not write "
            f"({_names(names)}); choose an empty or new folder, or pass --force to write "
            "beside them (they are kept)"
        )


def check_plan_against(
    out_dir: Path, state: OutDirState, hashes: dict[str, str], force: bool
) -> None:
    """Refuse a partly written dataset of another plan (unless `force`), and, always, a plan
    that would overwrite a file no record says imnet64 wrote."""
    if state.manifest is None and state.sidecars and not force:
        resumes = any(hashes.get(f) == s.get("plan") for f, s in state.sidecars.items())
        if not resumes:
            raise UserError(
                f"OUT_DIR {out_dir} holds a partly written dataset made from another SOURCE "
                f"or with other options ({len(state.sidecars)} shard(s) recorded in "
                f"{SIDECAR_DIR}/, no {MANIFEST_NAME}); pass --force to replace it or choose "
                "another folder"
            )
    if not state.is_dataset_folder:
        clash = sorted(set(state.shard_named) & set(hashes))
        if clash:
            raise UserError(
                f"OUT_DIR {out_dir} holds {_names(clash)}, which this run would write, and no "
                "record says imnet64 wrote it: imnet64 will not replace it; move it away or "
                "choose another folder"
            )


def _remove_stale_outputs(
    out_dir: Path, keep: set[str], recorded: dict[str, int | None]
) -> list[str]:
    """Shard files of earlier plans that a record (old manifest, sidecar) says imnet64
    wrote, if their size is still the recorded one, and their sidecars. Returns the shard
    files kept because no record covers them or their size changed."""
    sidecars = _read_sidecars(out_dir / SIDECAR_DIR) if (out_dir / SIDECAR_DIR).is_dir() else {}
    recorded = {**{f: s.get("bytes") for f, s in sidecars.items()}, **recorded}
    kept = []
    for path in sorted(out_dir.iterdir()):
        name = path.name
        if not SHARD_NAME_RE.match(name) or name in keep or not path.is_file():
            continue
        size = recorded.get(name, -1)
        if name in recorded and (size is None or path.stat().st_size == size):
            path.unlink(missing_ok=True)
        else:
            kept.append(name)
    for name in sidecars:
        if name not in keep and not (out_dir / name).exists():
            (out_dir / SIDECAR_DIR / f"{name}.json").unlink(missing_ok=True)
    return kept


def _remove_temps(
    out_dir: Path, shards: set[str] | None, manifest_older_than: float | None = None
) -> int:
    """Temporaries a killed run left: of the shard files `shards` (None: any) and their
    sidecars, and, with `manifest_older_than`, dataset.json's that are older than that
    (a newer one may be another rank's write in progress). Returns how many went."""
    removed = 0
    for folder, sidecar in ((out_dir, False), (out_dir / SIDECAR_DIR, True)):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if _is_leftover_temp(path, sidecar, shards, manifest_older_than):
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def _is_leftover_temp(path: Path, sidecar: bool, shards: set[str] | None,
                      manifest_older_than: float | None) -> bool:
    """Whether `path` is a temporary `_remove_temps` is asked to remove (see there)."""
    if not _is_own_temp(path.name, sidecar) or not path.is_file():
        return False
    target = atomic.temp_target(path.name) or ""
    if target in (MANIFEST_NAME, RUN_SIDECAR):
        return manifest_older_than is not None and path.stat().st_mtime < manifest_older_than
    return shards is None or target.removesuffix(".json") in shards


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


@dataclass(frozen=True)
class _DatasetPlan:
    """What the dataset will hold: the same on every rank (a pure function of SOURCE and
    the options)."""

    source: Source
    selection: Selection
    split: dict[str, list[Example]]
    shards: dict[str, list[PlannedShard]]  # by split
    hashes: dict[str, str]  # shard file -> plan hash

    @property
    def all_shards(self) -> list[PlannedShard]:
        return [p for s in SPLITS for p in self.shards[s]]

    def describe(self) -> str:
        return (f"{len(self.source.items)} images in SOURCE, {len(self.selection.examples)} "
                f"kept in {len(self.selection.classes)} classes: "
                + ", ".join(f"{s} {len(self.split[s])} in {len(self.shards[s])} shard(s)"
                            for s in SPLITS))


def _plan_dataset(source: Path, options: ShardOptions, allow_partial: bool) -> _DatasetPlan:
    scanned = scan_source(source, allow_partial)
    if options.labels == "truth":
        scanned = keyed_by_truth(scanned)
    selection = select(
        scanned,
        min_confidence=options.min_confidence,
        classes=options.classes,
        max_per_class=options.max_per_class,
        seed=options.seed,
    )
    split = split_examples(selection, options.val_fraction, options.seed)
    shard_bytes = int(options.shard_size_mb * 2**20)
    shards = {
        s: plan_shards(s, split[s], options.encoding, shard_bytes, options.seed) for s in SPLITS
    }
    base = json.dumps(
        [scanned.fingerprint, options.encoding, [asdict(c) for c in selection.classes]]
        + ([options.labels] if options.labels != "teacher" else []),  # teacher: hashes as before
        sort_keys=True,
    )
    hashes = {p.file: _plan_hash(base, p) for s in SPLITS for p in shards[s]}
    return _DatasetPlan(scanned, selection, split, shards, hashes)


def _write_my_shards(out_dir: Path, plan: _DatasetPlan, options: ShardOptions, slot: ShardSlot,
                     num_workers: int, progress: ProgressFn | None, log: LogFn) -> ShardResult:
    """Write the shards of the plan that are this rank's and not done yet."""
    mine = [p for j, p in enumerate(plan.all_shards) if j % slot.count == slot.index]
    # this process alone writes its shards, so their temporaries are leftovers of a kill
    removed = _remove_temps(out_dir, {p.file for p in mine})
    todo = [p for p in mine if _done_sidecar(out_dir, p, plan.hashes[p.file]) is None]
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


def _finish(out_dir: Path, plan: _DatasetPlan, sidecars: dict[str, ShardSidecar],
            options: ShardOptions, recorded: dict[str, int | None], started_at: float,
            result: ShardResult) -> None:
    """Every shard is done: write the manifest, then remove what older plans left."""
    manifest = _write_manifest(out_dir, plan.source, plan.selection.classes, plan.shards,
                               sidecars, options, plan.selection.dropped)
    write_run_sidecar(out_dir, provenance.collect())  # run fields: not in dataset.json
    kept = _remove_stale_outputs(out_dir, set(plan.hashes), recorded)
    if kept:
        result.messages.append(
            f"kept {_names(kept)} in {out_dir}: named like a shard, but no record says "
            "imnet64 wrote it as it is now"
        )
    # every shard of the plan is done, so no writer of a shard is left; a manifest
    # temporary from before this run started is a killed run's
    _remove_temps(out_dir, None, manifest_older_than=started_at)
    result.status, result.manifest = "complete", manifest


def _check_arguments(source: Path, out_dir: Path, options: ShardOptions,
                     num_workers: int) -> None:
    options.check()
    if num_workers < 1:
        raise UserError(f"--num-workers must be at least 1, got {num_workers}")
    if not source.exists():
        raise UserError(f"SOURCE {source} does not exist")
    _check_out_dir(source, out_dir)


def _claim_out_dir(out_dir: Path, state: OutDirState) -> None:
    """Mark OUT_DIR as this dataset's before its first shard is written."""
    # .shards/ first: it marks the folder as shard-records' even before a shard is done
    (out_dir / SIDECAR_DIR).mkdir(parents=True, exist_ok=True)
    # an older manifest describes other shards: it must not outlive their replacement
    if state.manifest is not None:
        (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
        (out_dir / RUN_SIDECAR).unlink(missing_ok=True)


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
    current = _manifest_is_current(out_dir, fingerprint, options)
    if current is not None:
        return ShardResult(out_dir, "up-to-date", manifest=current)
    state = read_out_dir(out_dir)
    check_before_writing(out_dir, state, fingerprint, options, force)

    log(f"reading the catalog of {source}")
    plan = _plan_dataset(source, options, allow_partial)
    check_plan_against(out_dir, state, plan.hashes, force)

    _claim_out_dir(out_dir, state)

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
