"""`imnet64 shard-records` and `imnet64 inspect`: options and display only."""

from __future__ import annotations

from imnet64.cluster.environment import shard_slot
from imnet64.errors import UserError
from imnet64.records.options import ENCODINGS, LABEL_SOURCES, ShardOptions

import click

from .progress import progress


def _log(message: str) -> None:
    click.echo(message, err=True)


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


_DEFAULTS = ShardOptions()


@click.command()
@click.argument("source", type=click.Path(path_type=str))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--val-fraction", type=float, default=_DEFAULTS.val_fraction, show_default=True,
              metavar="F", help="Share of each class held out for validation (stratified).")
@click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True,
              help="Seed of the split, the class cap sample and the shuffle.")
@click.option("--min-confidence", type=float, default=None, metavar="C",
              help="Drop images whose teacher confidence is below C.")
@click.option("--classes", default=None, metavar="K|LIST",
              help="Keep the K most frequent classes, or the comma-separated class names.")
@click.option("--max-per-class", type=int, default=None, metavar="M",
              help="Keep at most M images per class (a seeded sample).")
@click.option("--shard-size-mb", type=float, default=_DEFAULTS.shard_size_mb, show_default=True,
              metavar="MB", help="Target shard size in MiB.")
@click.option("--encoding", type=click.Choice(ENCODINGS), default=_DEFAULTS.encoding,
              show_default=True,
              help="png keeps the original bytes; raw stores decoded uint8 pixels "
              "(1.8x the bytes, no PNG decode when training).")
@click.option("--labels", "label_source", type=click.Choice(LABEL_SOURCES),
              default=_DEFAULTS.labels, show_default=True,
              help="The class of each record: the teacher's top-1 (pseudo-labels), or the "
              "true label the inputs carried (ImageNet64 batch files: a supervised baseline). "
              "Records keep both either way.")
@click.option("--num-workers", type=int, default=1, show_default=True, metavar="W",
              help="Processes writing shards (per Slurm rank). Output is the same for any W.")
@click.option("--allow-partial", is_flag=True,
              help="Use only the finished parts of an unfinished label OUT_DIR.")
@click.option("--force", is_flag=True,
              help="Replace another dataset in OUT_DIR (only the shards and dataset.json "
              "imnet64 recorded writing are removed), or write beside files imnet64 did not "
              "write (kept).")
@click.option("--progress-every", type=float, default=30.0, show_default=True, metavar="S",
              help="Seconds between progress lines when not on a terminal.")
def shard_records(source, out_dir, val_fraction, seed, min_confidence, classes, max_per_class,
                  shard_size_mb, encoding, label_source, num_workers, allow_partial, force,
                  progress_every) -> None:
    """Write training TFRecord shards and OUT_DIR/dataset.json from SOURCE.

    SOURCE is the OUT_DIR of `imnet64 label`, or a class-folder tree (one folder per
    class). Shards are train-IIIII-of-NNNNN.tfrecord and val-..., shuffled and
    class-balanced. Under `srun`, each rank (SLURM_PROCID of SLURM_NTASKS) writes its own
    shards and rank 0 writes the manifest once all exist. A re-run with the same SOURCE
    and options changes nothing; an interrupted run resumes at the missing shards. An
    OUT_DIR holding another dataset, or files imnet64 did not write, is refused unless
    --force.
    """
    from imnet64.records.write import shard_records as run

    options = ShardOptions.build(classes=classes, val_fraction=val_fraction, seed=seed,
                                 min_confidence=min_confidence, max_per_class=max_per_class,
                                 shard_size_mb=shard_size_mb, encoding=encoding,
                                 labels=label_source)
    try:
        slot = shard_slot()
    except ValueError as e:
        raise UserError(f"{e} (Slurm variables)") from None
    desc = "shard-records" if slot.count == 1 else f"shard-records rank {slot.index}/{slot.count}"
    with progress(desc, every=progress_every) as update:
        result = run(source, out_dir, options, allow_partial=allow_partial,
                     num_workers=num_workers, slot=slot, progress=update, log=_log, force=force)
    for message in result.messages:
        _log(message)
    if result.status == "up-to-date":
        _log(f"{out_dir}/dataset.json is up to date with SOURCE and options; nothing to do")
        return
    _log(
        f"wrote {result.shards_written} shard(s), {result.examples_written} examples"
        + (f"; {result.shards_skipped} already done" if result.shards_skipped else "")
    )
    if result.manifest:
        m = result.manifest
        splits = ", ".join(
            f"{name} {s['count']} in {len(s['shards'])} shard(s)" for name, s in m["splits"].items()
        )
        stats = m["stats"]
        _log(
            f"{out_dir}/dataset.json: {len(m['classes'])} classes; {splits}; "
            f"{stats['converted']} image(s) converted to 64x64 RGB"
        )


def _print_summary(summary, all_classes: bool) -> None:
    click.echo(f"dataset  {summary.root}")
    click.echo(
        f"encoding {summary.encoding}   classes {summary.num_classes}   "
        f"teacher {summary.teacher or '-'}"
    )
    from imnet64.formats.provenance import lines

    for i, line in enumerate(lines(summary.provenance)):
        click.echo(f"{'made by' if i == 0 else '':<8} {line}")
    click.echo("")
    click.echo(
        f"{'split':<6} {'examples':>9} {'shards':>6} {'size':>12} "
        f"{'shard size min..max':>24} {'examples/shard':>16}"
    )
    for s in summary.splits:
        click.echo(
            f"{s.name:<6} {s.examples:>9} {s.shards:>6} {_mb(s.bytes):>12} "
            f"{_mb(s.shard_bytes_min) + '..' + _mb(s.shard_bytes_max):>24} "
            f"{f'{s.shard_examples_min}..{s.shard_examples_max}':>16}"
        )
    click.echo(f"{'total':<6} {summary.examples:>9} {'':>6} {_mb(summary.bytes):>12}")
    click.echo("")
    splits = [s.name for s in summary.splits]
    rows = sorted(summary.classes, key=lambda c: (-c.total, c.id))
    shown = rows if all_classes or len(rows) <= 20 else rows[:10] + rows[-5:]
    header = f"{'id':>5} {'teacher':>7} {'class':<28}" + "".join(f" {n:>8}" for n in splits)
    click.echo(header + "  (class histogram, most frequent first)")
    for i, c in enumerate(shown):
        if not all_classes and len(rows) > 20 and i == 10:
            click.echo(f"{'...':>5} ({len(rows) - 15} more classes; --all-classes lists them)")
        teacher = "-" if c.teacher_id is None else str(c.teacher_id)
        click.echo(
            f"{c.id:>5} {teacher:>7} {c.name[:28]:<28}"
            + "".join(f" {c.counts[n]:>8}" for n in splits)
        )


@click.command()
@click.argument("dataset_dir", type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--verify",
    is_flag=True,
    help="Re-hash every shard against the manifest; exit 1 on any mismatch.",
)
@click.option("--all-classes", is_flag=True, help="List every class in the histogram.")
def inspect(dataset_dir, verify, all_classes) -> None:
    """Summarise a dataset written by shard-records: counts, class histogram, shard sizes."""
    from imnet64.formats.manifest import load_manifest
    from imnet64.records.inspect import summarize
    from imnet64.records.inspect import verify as verify_shards

    manifest = load_manifest(dataset_dir)
    _print_summary(summarize(manifest), all_classes)
    if not verify:
        return
    with progress("verify", unit="bytes", every=30.0) as update:
        problems = verify_shards(manifest, update)
    shards = sum(len(s.shards) for s in manifest.splits.values())
    if problems:
        for line in problems:
            click.echo(f"MISMATCH {line}", err=True)
        click.echo(f"verify: {len(problems)} problem(s) in {shards} shard(s)", err=True)
        raise click.exceptions.Exit(1)
    click.echo(f"verify: all {shards} shard(s) match the manifest (size, sha256, records)")
