"""`imnet64 evaluate RUN_DIR`: a table (or JSON) of loss, top-1/top-5, per class, confusions."""

from __future__ import annotations

import json

from imnet64.train.config import (
    CHECKPOINT,
    EVAL_BATCH_SIZE,
    EVAL_SPLIT,
    PER_CLASS_SHOWN,
    TOP_CONFUSED,
)

import click


def _truth_line(t: dict) -> str:
    line = (f"student vs truth on {t['count']} images of {t['source']}: top-1 {t['top1']:.4f}"
            f"   top-{t['k']} {t['top5']:.4f}")
    if t.get("teacher_agreement") is not None:
        line += f"   agreement with the teacher {t['teacher_agreement']:.4f}"
    if t.get("not_kept"):
        line += f"   ({t['not_kept']} of a class the run did not keep)"
    return line


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--dataset", "dataset_dir", default=None, type=click.Path(file_okay=False),
              help="Dataset to evaluate on [default: the one the run trained on].")
@click.option("--split", default=EVAL_SPLIT, show_default=True, help="Split of the dataset.")
@click.option("--checkpoint", default=CHECKPOINT, show_default=True,
              help="'best' (lowest val loss), 'latest' (the newest one that reads back intact), "
                   "or a checkpoint path.")
@click.option("--batch-size", default=EVAL_BATCH_SIZE, show_default=True)
@click.option("--top-confused", default=TOP_CONFUSED, show_default=True,
              help="How many confused class pairs to list.")
@click.option("--labeled-set", default=None, type=click.Path(file_okay=False),
              metavar="LABEL_OUT_DIR",
              help="Also score the student against the true labels of a separate set: the "
              "OUT_DIR of `imnet64 label` on ImageNet64 batch files (e.g. val_data).")
@click.option("--precise-bn-batches", default=0, show_default=True,
              help="First recompute BatchNorm's statistics on N batches of the run's train "
                   "split (for runs trained with --precise-bn-batches 0; 0: the "
                   "checkpoint's own).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def evaluate(run_dir, dataset_dir, split, checkpoint, batch_size, top_confused, labeled_set,
             precise_bn_batches, as_json) -> None:
    """Evaluate RUN_DIR's model; also writes RUN_DIR/evaluation-<split>.json.

    Where the images carry true labels (ImageNet64 batch files), also the student's
    top-1/top-5 against them, beside its agreement with the teacher."""
    from imnet64.train.evaluate import evaluate_run

    result = evaluate_run(run_dir, dataset_dir, split, checkpoint, batch_size, top_confused,
                          labeled_set=labeled_set, precise_bn_batches=precise_bn_batches)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    from imnet64.formats.provenance import lines

    click.echo(f"{result.split} split of {result.dataset}: {result.count} images "
               f"(checkpoint {result.checkpoint})")
    for i, line in enumerate(lines(result.run_provenance)):
        click.echo(f"{'trained by' if i == 0 else '':<10}  {line}")
    click.echo(f"loss {result.loss:.4f}   top-1 {result.top1:.4f}   "
               f"top-{result.k} {result.top5:.4f}")
    if result.teacher_agreement is not None:
        click.echo(f"teacher: top-1 agreement {result.teacher_agreement:.4f}   "
                   f"KL(teacher || student) {result.teacher_kl:.4f}   "
                   f"({result.with_teacher} images with teacher probabilities)")
    for truth in (result.truth, result.labeled_set):
        if truth is not None:
            click.echo(_truth_line(truth))
    click.echo("")
    shown = result.classes_to_show(PER_CLASS_SHOWN)
    if len(shown) < len(result.per_class):
        click.echo(f"the {len(shown)} worst of {len(result.per_class)} classes (every class: "
                   f"per_class in {result.run_dir}/evaluation-{result.split}.json):")
    name_w = max([len("class")] + [len(c.name) for c in shown])
    click.echo(f"{'id':>5}  {'class':<{name_w}}  {'images':>7}  {'correct':>7}  accuracy")
    for c in shown:
        acc = f"{c.accuracy:.4f}" if c.accuracy is not None else "-"
        click.echo(f"{c.id:>5}  {c.name:<{name_w}}  {c.count:>7}  {c.correct:>7}  {acc:>8}")
    if result.most_confused:
        click.echo("")
        click.echo("most confused (true -> predicted):")
        for m in result.most_confused:
            click.echo(f"  {m.true_name} -> {m.predicted_name}: {m.count} "
                       f"({100 * m.share_of_true:.1f}% of {m.true_name})")
