"""`imnet64 label` and `imnet64 label-status`: options and display only."""

from __future__ import annotations

import contextlib
import json
import os

from imnet64.cluster.environment import Environment
from imnet64.errors import UserError
from imnet64.formats.truth_counts import TruthCounts
from imnet64.label.options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_PRECISION,
    DEFAULT_READ_THREADS,
    DEFAULT_TOP_K,
    MAX_READ_THREADS,
    PRECISIONS,
    LabelOptions,
    shard_of,
    teacher_spec_or_default,
)

import click

from .progress import progress


def _log(message: str) -> None:
    click.echo(message, err=True)


class _ProgressOnFirstUse:
    """Opens the progress display at the first update, so its rate and ETA count labeling
    only (not the seconds spent importing TensorFlow and loading the teacher)."""

    def __init__(self, stack: contextlib.ExitStack, description: str, every: float):
        self.stack, self.description, self.every = stack, description, every
        self.update = None

    def __call__(self, done: int, total: int) -> None:
        if self.update is None:
            self.update = self.stack.enter_context(progress(self.description, every=self.every))
        self.update(done, total)


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=str))
# OUT_DIR and --export-folders are checked by imnet64.label.run (a file made there) before
# anything else, with a one-line error: no click.Path(file_okay=False) usage text
@click.argument("out_dir", type=click.Path(path_type=str))
@click.option("--teacher", "teacher_spec", default=None, metavar="T",
              help="TF Hub handle, SavedModel folder, or 'offline' (built-in MobileNet V2). "
                   "Default: $IMNET64_TEACHER, else the TF Hub MobileNet V2 handle.")
@click.option("--num-shards", type=int, default=None, metavar="N",
              help="Number of shards. Default: SLURM_ARRAY_TASK_COUNT, SLURM_NTASKS, 1.")
@click.option("--shard-index", type=int, default=None, metavar="I",
              help="This shard, 0..N-1. Default: SLURM_ARRAY_TASK_ID (relative to "
                   "SLURM_ARRAY_TASK_MIN), SLURM_PROCID, 0.")
@click.option("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, show_default=True, metavar="B")
@click.option("--top-k", type=int, default=DEFAULT_TOP_K, show_default=True, metavar="K",
              help="Teacher top-k ids and probabilities kept per image (soft labels).")
@click.option("--force", is_flag=True, help="Relabel a shard even if its summary exists.")
@click.option("--export-folders", "export_dir", type=click.Path(path_type=str),
              default=None, metavar="DIR",
              help="Also lay out DIR/<class>/<file> as symlinks to the inputs (never moves).")
@click.option("--copy", is_flag=True, help="With --export-folders: copy instead of linking.")
@click.option("--read-threads", type=click.IntRange(1, MAX_READ_THREADS),
              default=DEFAULT_READ_THREADS, show_default=True,
              help="Threads reading and decoding files (hide file-system latency).")
@click.option("--precision", type=click.Choice(PRECISIONS), default=DEFAULT_PRECISION,
              show_default=True,
              help="The teacher's compute precision: bf16 runs it through oneDNN's bf16 pass "
                   "(CPUs with AVX512_BF16 or AMX); auto picks bf16 there, else fp32. "
                   "Stored probabilities are float32 either way.")
@click.option("--progress-every", type=float, default=30.0, show_default=True, metavar="S",
              help="Seconds between progress lines when not on a terminal.")
def label(input_path, out_dir, teacher_spec, num_shards, shard_index, batch_size, top_k,
          force, export_dir, copy, read_threads, precision, progress_every) -> None:
    """Pseudo-label the images of INPUT with the teacher: one shard per call.

    INPUT is a folder (searched recursively), a text file listing image paths (one per
    line, relative to the list's folder), or an uncompressed .tar archive read in place;
    or the official ImageNet64 batch files (train_data_batch_N, val_data, pickle or .npz:
    one file, a folder of them, or the Imagenet64_*.zip as downloaded), whose true labels
    are kept and scored against (docs/datasets.md).
    Writes OUT_DIR/labels/part-IIIII-of-NNNNN.{tfrecord,csv,json}; the .json summary
    comes last and marks the shard done. Inputs are never moved or changed.
    """
    from imnet64.label.run import run

    if not os.path.exists(input_path):
        raise UserError(f"INPUT {input_path} does not exist")
    if copy and export_dir is None:
        raise UserError("--copy only applies with --export-folders DIR")
    environment = Environment.read()
    slot = shard_of(shard_index, num_shards, environment)
    options = LabelOptions(
        teacher_spec=teacher_spec_or_default(teacher_spec, environment),
        batch_size=batch_size, top_k=top_k, read_threads=read_threads, force=force,
        export_dir=export_dir, copy=copy, precision=precision)
    with contextlib.ExitStack() as stack:
        update = _ProgressOnFirstUse(stack, f"label {slot.index}/{slot.count}", progress_every)
        summary, skipped = run(input_path, out_dir, options, index=slot.index,
                               count=slot.count, progress=update, log=_log)
    if skipped:
        return
    rate = summary.get("images_per_second")
    click.echo(
        f"shard {slot.index}/{slot.count}: {summary['inputs']} inputs, {summary['labeled']} "
        f"labeled, {summary['rejected']} rejected, {rate} images/s "
        f"({summary.get('precision', 'fp32')}) -> {out_dir}/labels",
        err=True,
    )
    if summary.get("truth"):
        click.echo(f"shard {slot.index}/{slot.count}: "
                   f"{TruthCounts.from_json(summary['truth']).describe()}", err=True)
    for reject in summary["rejects"][:10]:
        click.echo(f"  rejected {reject['path']}: {reject['reason']}", err=True)
    if summary["rejected"] > 10:
        click.echo(f"  ... {summary['rejected'] - 10} more in the .json summary", err=True)


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--num-shards", type=int, default=None, metavar="N",
              help="Shards the job was split into (inferred when the files show one count).")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def label_status(out_dir, num_shards, as_json) -> None:
    """Which label shards of OUT_DIR are done, missing or partial, and totals.

    Exits 0 when every shard is done, 1 otherwise (handy before `shard-records`).
    """
    from imnet64.formats.label_status import label_status as status_of

    status = status_of(out_dir, num_shards)
    if as_json:
        click.echo(json.dumps(status.as_dict(), indent=2, sort_keys=True))
    else:
        for shard in status.shards:
            if shard.state != "done" or status.num_shards <= 50:
                click.echo(f"shard {shard.index:5d}  {shard.state:8s} {shard.detail}".rstrip())
        t = status.totals()
        click.echo(
            f"{t['done']}/{t['shards']} done, {t['partial']} partial, {t['missing']} missing"
            f"{', ' + str(t['damaged']) + ' damaged' if t['damaged'] else ''}; "
            f"{t['inputs']} inputs = {t['labeled']} labeled + {t['rejected']} rejected "
            "(done shards)"
        )
        truth = status.truth()
        if truth is not None:
            click.echo(f"{truth.describe()} (done shards)")
        for state in ("missing", "partial", "damaged"):
            ids = [str(s.index) for s in status.of(state)]
            if ids:
                click.echo(f"{state} shards: {','.join(ids)}")
        if status.other_counts:
            other = ", ".join(map(str, status.other_counts))
            click.echo(f"note: part files for other shard counts exist too: {other}")
    if not status.complete:
        raise click.exceptions.Exit(1)
