"""Label one shard of the input with the teacher and write its part files.

Pipeline (reading, decoding and inference overlap):

    input indices ─BatchReader: read + PIL decode on a thread pool, up to 2 batches ahead─▶
      uint8 [k, 64, 64, 3] + indices of the k decoded (rejects recorded aside) ─▶
      one tf.function: float32 [0,1], bilinear resize to the teacher's size, teacher.logits,
      softmax, top-k ─▶ TFRecord + CSV rows, written in input order

(batch_reader explains why the reading is on Python threads and not a Python stage inside
tf.data: measured, the latter ran at one core's worth in a third of the runs here.)

Pixels for a 64x64 input are exactly the seed's (convert_image_dtype, then tf.image.resize
bilinear to 224x224). Doing the 224x224 resize inside the inference graph, on the batch,
keeps 50x less data in the read-ahead buffers (uint8 64x64 instead of float 224x224) and
leaves the cores to the teacher. An input of another size is first resized to 64x64
(image_decode.to_native_size): it is labeled as the 64x64 image the student will see.

The original file bytes and reject reasons travel beside the batches in dictionaries keyed by
input index; entries are dropped once written, so memory holds only what is in flight,
whatever the number of inputs.

What is promised about the numbers. The teacher's kernels on CPU (TensorFlow's Eigen
kernels, and oneDNN's) may round an image's activations differently depending on the
other images in its batch and its place there: on an AVX2 CPU without oneDNN the same image
got 0.1524280160665512 in one batch and 0.1524277627468109 in another. So:

- the same shard (INPUT, --num-shards, --shard-index) with the same --batch-size,
  --top-k and teacher precision (--precision, auto resolved), on the same machine and
  TensorFlow build, gives byte-identical part files (a re-run, a run killed with `kill -9`
  and re-run); the summary records the precision, and a done shard asked for again in
  another precision is skipped with a note naming both (--force relabels it);
- across shardings or batch sizes, every input gets the same label, unless the teacher's
  two highest probabilities for it are within PROBABILITY_TOLERANCE of each other (a
  near-tie that rounding may flip), and each top-k probability agrees within
  PROBABILITY_TOLERANCE (absolute). Measured differences are ~1e-7; batch-invariant
  inference would cost the batching that makes labeling fast. (Within one precision: bf16
  against fp32 labels differ far more, bench/precision.py measures by how much.)

Rejects do not shift the batches (BatchReader fills every batch but the last), so the
batch composition depends only on the inputs, the shard and the batch size.

Outputs of one shard (see label_parts): the TFRecord and CSV are written to temporary names
and renamed when complete; the JSON summary is written last and marks the shard done. Their
bytes depend only on the inputs, the teacher, top-k and the batch size (no timestamps, no
timings: those go to the .timing.json beside them), so a run killed with `kill -9` and
re-run gives the same files as an uninterrupted run. Their provenance (imnet64.cluster.provenance)
is split the same way: code and teacher in the .json, host and Slurm ids in the .timing.json.
Names in the CSV and the summary are valid UTF-8 even when the file names are not
(formats.image_names.escape_name).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import hashlib
import io
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import imnet64
from imnet64 import atomic, disk_errors
from imnet64.cluster import folder_lock, provenance
from imnet64.cluster.precision import PrecisionChoice, choose
from imnet64.errors import UserError
from imnet64.formats import provenance as provenance_schema
from imnet64.formats import read_back
from imnet64.formats.image_names import escape_name, unescape_name
from imnet64.formats.label_parts import (
    CSV_HEADER,
    CSV_HEADER_BEFORE_TRUTH,
    PartPaths,
    part_paths,
    read_summary,
)
from imnet64.formats.label_summary import LabelSummary, LabelTiming, PartFile, Reject
from imnet64.formats.truth_counts import TruthCounts
from imnet64.label.batch_reader import BatchReader, Reserve
from imnet64.label.image_decode import NATIVE_SIZE, decode_image, to_native_size
from imnet64.label.inputs import (
    InputReadError,
    InputSet,
    names_fingerprint,
    open_inputs,
    shard_range,
)
from imnet64.label.options import LabelOptions

import numpy as np

if TYPE_CHECKING:  # TensorFlow is imported only when a shard is labeled
    from imnet64.formats.tfrecord_schema import LabeledImage
from imnet64.progress import LogFn, ProgressFn

# How far a probability may move when the same image is labeled in another batch (see the
# module docstring): the promise the tests hold on every x86-64 CPU, oneDNN on or off.
PROBABILITY_TOLERANCE = 1e-5
# Images larger than this on a side are first shrunk by an integer factor (a cheap box
# filter) before the bilinear resize to 64x64, so one odd 8000x8000 photo costs little.
MAX_DECODE_SIDE = 1024
# An input's original bytes wait in memory from decoding to writing (about three batches
# later) if the file is at most this large; a larger one is read again when its record is
# written, and must be unchanged. So the read-ahead holds at most ~4 batches x this
# (64 MiB at batch 64), not 4 x 64 x 64 MB. 64x64 images are a few kB.
KEEP_ENCODED_BYTES = 256 * 1024


@dataclass
class LabelPlan:
    """What one shard has to do, known before any TensorFlow or teacher is loaded."""

    input_path: Path
    out_dir: Path
    index: int
    count: int
    inputs: InputSet  # this shard's inputs only
    total_inputs: int  # over all shards
    fingerprint: str
    paths: PartPaths
    existing: dict[str, Any] | None  # the summary on disk, if any
    summary_problem: str | None = None  # what is wrong with a damaged summary on disk

    @property
    def done(self) -> bool:
        """A matching summary and both part files exist: nothing to do."""
        s = self.existing
        return (
            s is not None
            and s.get("inputs_sha256") == self.fingerprint
            and s.get("inputs") == len(self.inputs)
            and self.paths.tfrecord.is_file()
            and self.paths.csv.is_file()
        )


def _inside(child: Path, parent: Path) -> bool:
    child, parent = child.resolve(), parent.resolve()
    return child == parent or parent in child.parents


def _check_request(input_path: Path, out_dir: Path, index: int, count: int,
                   export_dir: str | os.PathLike | None) -> None:
    """What can be refused from the arguments alone, before anything is read or written."""
    if count < 1 or not 0 <= index < count:
        raise UserError(f"shard index {index} is not in 0..{count - 1} (--num-shards {count})")
    if input_path.is_dir():
        # our outputs must never be read back as inputs (or be written into the user's tree)
        for what, target in (("OUT_DIR", out_dir), ("--export-folders", export_dir)):
            if target is not None and _inside(Path(target), input_path):
                raise UserError(f"{what} {target} is inside INPUT {input_path}; choose another")


def _why_not_writable(folder: Path, error: OSError) -> str:
    """A short reason, naming the regular file that stands where a folder is needed."""
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            return f"{existing} is a file, not a folder"
    return error.strerror or str(error)


def writable_problem(folder: Path, what: str, probe_name: str,
                     needed: Callable[[], int | None] | None = None) -> str | None:
    """None if `folder` exists (it is created if missing) and a file can be made in it, else
    a one-line reason. Creating (then removing) a real file is the only check that holds on
    read-only mounts, quotas and ACLs, and for root (whom permission bits do not stop).
    `probe_name`: the file the temporary is named after (atomic.temp_path_for), so that a
    leftover of a kill is recognised as this shard's temporary file. A full disk is said as
    every stage says it (disk_errors), with `needed()`: the free space the outputs need."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic.temp_path_for(folder / probe_name).unlink()
    except OSError as e:
        if disk_errors.is_no_space(e):
            # named after the output folder, not the parent a mkdir failed in
            return str(disk_errors.as_user_error(OSError(e.errno, e.strerror), folder, what,
                                                 needed))
        return f"cannot write {what} to {folder}: {_why_not_writable(folder, e)}"
    return None


def plan_shard(
    input_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    index: int,
    count: int,
    export_dir: str | os.PathLike | None = None,
) -> LabelPlan:
    """Enumerate INPUT, pick this shard's contiguous slice of the sorted names, look at disk."""
    input_path, out_dir = Path(input_path), Path(out_dir)
    _check_request(input_path, out_dir, index, count, export_dir)
    all_inputs = open_inputs(input_path)
    if len(all_inputs) == 0:
        raise UserError(f"no image files found in {input_path}")
    start, stop = shard_range(len(all_inputs), index, count)
    inputs = all_inputs.subset(start, stop)
    if inputs is not all_inputs:
        all_inputs.close()
    paths = part_paths(out_dir, index, count)
    return LabelPlan(
        input_path=input_path,
        out_dir=out_dir,
        index=index,
        count=count,
        inputs=inputs,
        total_inputs=len(all_inputs),
        fingerprint=names_fingerprint(inputs.names),
        paths=paths,
        **_existing_summary(paths),
    )


def _existing_summary(paths: PartPaths) -> dict[str, Any]:
    """The shard's summary on disk, or why it cannot be trusted (then --force is needed to
    write it anew: the user's file is never silently replaced)."""
    try:
        return {"existing": read_summary(paths.summary)}
    except UserError as e:
        return {"existing": None, "summary_problem": str(e)}


@contextlib.contextmanager
def _shard_lock(paths: PartPaths) -> Iterator[None]:
    """Refuse to run a shard twice at once (e.g. a requeued job while the old one lives):
    the part's lock (imnet64.cluster.folder_lock: flock plus a record naming the holder,
    which also works where the filesystem has no flock)."""
    with folder_lock.held(paths.folder, f"imnet64 label (shard {paths.stem})",
                          path=paths.lock):
        yield


@dataclass(frozen=True)
class _ReadAgain:
    """A large input's bytes, not kept: read again at write time and checked against this."""

    size: int
    digest: bytes


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _read_again(inputs: InputSet, i: int, want: _ReadAgain) -> bytes:
    data = inputs.read(i)
    if len(data) != want.size or _digest(data) != want.digest:
        raise InputReadError("file changed while it was being labeled")
    return data


class _SideTable:
    """Per-input data that does not go to the teacher: original bytes and reject reasons."""

    def __init__(self) -> None:
        self.encoded: dict[int, tuple[bytes | _ReadAgain, str, int, int]] = {}
        self.rejects: dict[int, str] = {}
        self.lock = threading.Lock()


def _loader(inputs: InputSet, side: _SideTable) -> Callable[[int, Reserve], Any]:
    """load(i, reserve): input i read and decoded to uint8 64x64x3, or None when rejected
    (the reason goes to `side`). Never raises for a bad file: one file must not end the job.
    `reserve` is told the bytes it is about to hold (batch_reader.ByteBudget)."""

    def load(i: int, reserve: Reserve):
        try:
            data = inputs.read(i, reserve)
            decoded = decode_image(data, max_side=MAX_DECODE_SIDE, reserve=reserve)
            if decoded.ok:
                kept = (data if len(data) <= KEEP_ENCODED_BYTES
                        else _ReadAgain(len(data), _digest(data)))
                with side.lock:
                    side.encoded[i] = (kept, decoded.image_format, decoded.height, decoded.width)
                return to_native_size(decoded.image)
            reason = decoded.reason or "undecodable"
        except InputReadError as e:
            reason = str(e)
        except Exception as e:  # never let one file end the job
            reason = f"unexpected error: {type(e).__name__}: {e}"
        with side.lock:  # a reason quoting a file name must still be valid UTF-8
            side.rejects[i] = reason.encode("utf-8", "backslashreplace").decode("utf-8")
        return None

    return load


_PREDICTORS: dict[tuple[int, int, str], tuple[Any, Any]] = {}


def _predictor(teacher, top_k: int, precision: str = "fp32"):
    """probabilities' top-k of the teacher, one traced function per (teacher, k, precision)
    per process. bf16: the teacher's forward pass is rewritten by oneDNN's auto mixed
    precision pass (teacher.precision); its logits, the softmax and top-k stay float32."""
    key = (id(teacher), top_k, precision)
    if key in _PREDICTORS and _PREDICTORS[key][0] is teacher:
        return _PREDICTORS[key][1]
    from imnet64.teacher.images import pixels_to_teacher_input
    from imnet64.teacher.precision import in_precision

    import tensorflow as tf

    size = tuple(teacher.image_size)

    @tf.function(input_signature=[tf.TensorSpec([None, *NATIVE_SIZE, 3], tf.uint8)])
    def predict(images):
        probs = tf.nn.softmax(teacher.logits(pixels_to_teacher_input(images, size)), axis=-1)
        top_probs, top_ids = tf.math.top_k(probs, k=top_k, sorted=True)
        return top_ids, top_probs

    predict = in_precision(predict, precision)
    if len(_PREDICTORS) >= 4:
        _PREDICTORS.clear()
    _PREDICTORS[key] = (teacher, predict)
    return predict


def _csv_line(item: LabeledImage) -> bytes:
    # the confidence as stored in the record (float32), 6 decimals
    confidence = float(np.float32(item.confidence))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(
        [escape_name(item.filename), item.label, item.class_name, f"{confidence:.6f}",
         "" if item.truth is None else item.truth])
    return buf.getvalue().encode("utf-8")


def _part_file(path: Path) -> PartFile:
    return PartFile(path.name, path.stat().st_size, atomic.sha256_file(path))


def _clear_previous_run(paths: PartPaths, log: LogFn) -> None:
    """Temporaries a killed run left, and the summary of part files about to be replaced."""
    stale = paths.temp_files()
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        log(f"removed {len(stale)} temporary file(s) left by an interrupted run")
    # the old summary must not outlive part files we are about to replace
    paths.summary.unlink(missing_ok=True)
    paths.timing.unlink(missing_ok=True)


def _labeled_image(inputs: InputSet, side: _SideTable, i: int, top_ids, top_probs,
                   class_names: list[str]) -> LabeledImage | None:
    """Input i's record from its side-table entry and the teacher's top-k; None when its
    bytes, read again, changed (then it is a reject)."""
    with side.lock:
        encoded, fmt, height, width = side.encoded.pop(i)
    if isinstance(encoded, _ReadAgain):
        try:
            encoded = _read_again(inputs, i, encoded)
        except InputReadError as e:
            with side.lock:
                side.rejects[i] = str(e)
            return None
    from imnet64.formats.tfrecord_schema import LabeledImage

    ids = tuple(int(v) for v in top_ids)
    probs = tuple(float(v) for v in top_probs)
    return LabeledImage(encoded=encoded, image_format=fmt, height=height, width=width,
                        filename=inputs.names[i], label=ids[0], class_name=class_names[ids[0]],
                        confidence=probs[0], topk_ids=ids, topk_probs=probs,
                        truth=inputs.truth(i))


def _write_parts(plan: LabelPlan, teacher, options: LabelOptions,
                 progress: ProgressFn) -> tuple[int, dict[int, str], TruthCounts]:
    """Read, decode and label the shard's inputs; write its TFRecord and CSV in input order.
    Returns (number labeled, reject reason by input index, the teacher vs the truth)."""
    from imnet64.formats.tfrecord_schema import serialize_labeled

    import tensorflow as tf

    inputs, paths, total = plan.inputs, plan.paths, len(plan.inputs)
    side = _SideTable()
    predict = _predictor(teacher, options.top_k, options.precision)
    class_names = list(teacher.class_names)
    labeled = 0
    truth = TruthCounts()
    with BatchReader(total, _loader(inputs, side), options.batch_size,
                     threads=options.read_threads, byte_budget=options.read_budget) as batches, \
            atomic.atomic_path(paths.tfrecord) as tf_tmp, \
            atomic.atomic_open(paths.csv, "wb") as csv_file, \
            tf.io.TFRecordWriter(str(tf_tmp)) as writer:
        progress(0, total)
        csv_file.write(",".join(CSV_HEADER).encode() + b"\n")
        for indices, images in batches:
            top_ids, top_probs = (t.numpy() for t in predict(images))
            items = [_labeled_image(inputs, side, i, top_ids[row], top_probs[row], class_names)
                     for row, i in enumerate(indices.tolist())]
            for item in filter(None, items):  # None: rejected (the reason is in `side`)
                writer.write(serialize_labeled(item))
                csv_file.write(_csv_line(item))
                truth.add(item.truth, item.topk_ids)
            labeled += sum(item is not None for item in items)
            progress(int(indices[-1]) + 1, total)
    return labeled, dict(side.rejects), truth


def _summary(plan: LabelPlan, teacher, options: LabelOptions, labeled: int,
             rejects: dict[int, str], stable_provenance: dict[str, Any],
             truth: TruthCounts) -> LabelSummary:
    names = plan.inputs.names
    return LabelSummary(
        imnet64_version=imnet64.__version__,
        input=escape_name(str(plan.input_path)),
        input_kind=plan.inputs.kind,
        shard_index=plan.index,
        shard_count=plan.count,
        total_inputs=plan.total_inputs,
        inputs=len(names),
        labeled=labeled,
        rejects=tuple(Reject(escape_name(names[i]), rejects[i]) for i in sorted(rejects)),
        inputs_sha256=plan.fingerprint,
        first_input=escape_name(names[0]) if names else None,
        last_input=escape_name(names[-1]) if names else None,
        teacher=teacher.name,
        teacher_spec=options.teacher_spec,
        num_classes=teacher.num_classes,
        top_k=options.top_k,
        batch_size=options.batch_size,
        tfrecord=_part_file(plan.paths.tfrecord),
        csv=_part_file(plan.paths.csv),
        provenance=stable_provenance,
        truth=truth if truth.known else None,
        precision=options.precision,
    )


def label_shard(
    plan: LabelPlan,
    teacher,
    options: LabelOptions,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
) -> dict[str, Any]:
    """Label `plan`'s inputs with `teacher`; write the part files; return the run summary
    (the summary with the timing and the whole provenance).

    Overwrites the shard's part files (the caller decides whether a done shard is redone).
    `options.precision` auto is resolved here (teacher_precision).
    """
    options.check(teacher.num_classes)
    choice = teacher_precision(options.precision)
    options = dataclasses.replace(options, precision=choice.precision)
    log(f"teacher precision: {choice.line()}")
    log = log or (lambda message: None)
    progress = progress or (lambda done, total: None)
    total = len(plan.inputs)
    with _shard_lock(plan.paths):
        _clear_previous_run(plan.paths, log)
        start = time.monotonic()
        labeled, rejects, truth = _write_parts(plan, teacher, options, progress)
        seconds = time.monotonic() - start
        progress(total, total)
        missing = total - labeled - len(rejects)
        if missing:  # cannot happen unless the reader dropped inputs; never hide it
            raise RuntimeError(f"{missing} inputs neither labeled nor rejected")
        # what made it: code and teacher in the summary (the same on a re-run); host and job
        # ids go to the .timing.json, which may differ between runs
        made_by = provenance.of_teacher(teacher)
        summary = _summary(plan, teacher, options, labeled, rejects,
                           provenance_schema.stable(made_by), truth)
        atomic.write_json(plan.paths.summary, summary.to_json())  # marks the shard done
        # timings vary from run to run: kept out of the part files, which must not
        timing = LabelTiming.measured(plan.fingerprint, total, seconds,
                                      provenance_schema.run_part(made_by), choice.line())
        atomic.write_json(plan.paths.timing, timing.to_json())
    return {**summary.to_json(), "seconds": timing.seconds,
            "precision_choice": timing.precision_choice,
            "images_per_second": timing.images_per_second, provenance_schema.KEY: made_by}


def read_csv_rows(path: str | os.PathLike) -> list[tuple[str, int, str, float]]:
    """(path, label, class_name, confidence) rows of a part CSV; `path` is the input's name
    exactly (the CSV holds it escaped, see formats.image_names.escape_name)."""
    rebuild = "it is made with its part: rerun this label shard with --force"
    try:
        text = Path(path).read_bytes().decode("utf-8", "surrogateescape")
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = tuple(next(reader, None) or ())
        if header not in (CSV_HEADER, CSV_HEADER_BEFORE_TRUTH):
            raise read_back.damaged(path, f"its header is not {','.join(CSV_HEADER)}", rebuild)
        rows = []
        for r in reader:
            if len(r) != len(header):
                raise ValueError(f"{len(r)} fields, not {len(header)}")
            rows.append((unescape_name(r[0]), int(r[1]), r[2], float(r[3])))
    except (ValueError, csv.Error) as e:
        raise read_back.damaged(path, f"line {reader.line_num}: {e}", rebuild) from None
    return rows


def _output_problem(input_path: Path, out_dir: Path, index: int, count: int,
                    export_dir: str | os.PathLike | None) -> str | None:
    """Outputs first: a folder that cannot be written is found in milliseconds, not after
    reading INPUT and loading the teacher. A shard already done may still be skipped (e.g. a
    finished OUT_DIR mounted read-only), so that verdict waits for the plan: returned, not
    raised."""
    _check_request(input_path, out_dir, index, count, export_dir)
    paths = part_paths(out_dir, index, count)
    problem = writable_problem(paths.folder, "label outputs", paths.summary.name,
                               lambda: _part_bytes(input_path, count))
    if problem and not paths.summary.is_file():
        raise UserError(problem)
    if export_dir is not None:
        export_problem = writable_problem(Path(export_dir), "--export-folders", "export")
        if export_problem:
            raise UserError(export_problem)
    return problem


def teacher_precision(requested: str) -> PrecisionChoice:
    """What --precision means for the teacher here (a one-line error for a bf16 that cannot
    run: no fast bf16, oneDNN off, or a GPU)."""
    return choose(requested, teacher_pass=True)


def _reuse(plan: LabelPlan, options: LabelOptions, log: LogFn) -> dict[str, Any]:
    """The summary of a shard already done for these inputs. Other settings than the ones
    it was made with are named, not silently taken for them."""
    summary, teacher_spec = plan.existing, options.teacher_spec
    log(f"{plan.paths.summary} exists and matches its inputs: skipped (--force redoes it)")
    made_by = {summary.get("teacher"), summary.get("teacher_spec")}
    if teacher_spec is not None and teacher_spec not in made_by:
        log(f"note: this shard was labeled by teacher {summary.get('teacher')}, "
            f"not {teacher_spec}")
    made_in = summary.get("precision", "fp32")
    asked = teacher_precision(options.precision)
    if asked.precision != made_in:
        log(f"note: this shard was labeled in {made_in}, not {asked.line()} "
            "(--force relabels it)")
    return summary


def _relabel(plan: LabelPlan, options: LabelOptions, teacher: Any, problem: str | None,
             progress: ProgressFn | None, log: LogFn) -> dict[str, Any]:
    """Label the shard (loading the teacher if none is given); returns the run summary."""
    old = plan.existing
    if plan.summary_problem and not options.force:
        raise UserError(plan.summary_problem)
    if old is not None and not options.force and old.get("inputs_sha256") != plan.fingerprint:
        raise UserError(
            f"{plan.paths.summary} was written for other inputs "
            f"({old.get('inputs')} inputs, {old.get('first_input')} .. "
            f"{old.get('last_input')}); use --force to relabel or another OUT_DIR"
        )
    if problem:
        raise UserError(problem)
    teacher_precision(options.precision)  # a bf16 that cannot run: refused before loading
    if teacher is None:
        from imnet64.teacher import load_teacher

        teacher = load_teacher(options.teacher_spec)
    log(f"teacher: {teacher.name}")
    try:
        return label_shard(plan, teacher, options, progress, log)
    except OSError as e:  # e.g. the disk filled up: inputs never raise (rejects)
        if disk_errors.is_no_space(e):
            raise  # said by `run`'s disk_errors line: the folder and the space needed
        where = f" ({e.filename})" if e.filename else ""
        raise UserError(f"cannot write label outputs to {plan.paths.folder}: "
                        f"{e.strerror or e}{where}") from None


def _export(plan: LabelPlan, export_dir: str | os.PathLike, copy: bool, log: LogFn) -> None:
    from imnet64.label.export_folders import export_folders

    rows = read_csv_rows(plan.paths.csv)
    try:
        made = export_folders(plan.inputs, rows, export_dir, copy=copy)
    except OSError as e:
        raise UserError(f"cannot write --export-folders to {export_dir}: "
                        f"{e.strerror or e} ({e.filename})") from None
    log(f"--export-folders: {made} entries in {export_dir}")


def _part_bytes(input_path: str | os.PathLike, count: int) -> int:
    """The free space one shard's part needs: about its share of INPUT's bytes (the part
    holds each image's encoded bytes)."""
    return disk_errors.tree_bytes(input_path) // max(1, count)


@disk_errors.reports("the label part", lambda a: a["out_dir"],
                     lambda a: _part_bytes(a["input_path"], a["count"]))
def run(
    input_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: LabelOptions,
    *,
    index: int,
    count: int,
    teacher: Any = None,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
) -> tuple[dict[str, Any], bool]:
    """The whole `imnet64 label` for one shard. Returns (summary, skipped).

    The teacher is loaded from `options.teacher_spec` only if the shard has work to do,
    unless a loaded `teacher` is passed (to label several shards in one process).
    """
    log = log or (lambda message: None)
    problem = _output_problem(Path(input_path), Path(out_dir), index, count, options.export_dir)
    plan = plan_shard(input_path, out_dir, index, count, options.export_dir)
    log(
        f"shard {index}/{count}: {len(plan.inputs)} of {plan.total_inputs} inputs "
        f"({plan.inputs.kind} {plan.input_path})"
    )
    try:
        skipped = plan.done and not options.force
        if skipped:
            summary = _reuse(plan, options, log)
        else:
            summary = _relabel(plan, options, teacher, problem, progress, log)
        if options.export_dir is not None:
            _export(plan, options.export_dir, options.copy, log)
    finally:
        plan.inputs.close()
    return summary, skipped
