"""`imnet64 label-report OUT_DIR`: options in, the report's paths and headline out."""

from __future__ import annotations

from imnet64.label.report_data import ReportOptions

import click

DEFAULTS = ReportOptions


@click.command("label-report")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--dataset", "dataset_dir", default=None, type=click.Path(file_okay=False),
              help="Show the classes this dataset (shard-records output) kept.")
@click.option("--classes", default=DEFAULTS.classes, show_default=True,
              help="How many of the most frequent teacher classes (with --dataset: of the "
                   "kept ones).")
@click.option("--per-class", default=DEFAULTS.per_class, show_default=True,
              help="Sample images per class.")
@click.option("--low-confidence", default=DEFAULTS.low_confidence, show_default=True,
              help="A top-1 probability below this counts as a low-confidence label.")
@click.option("--seed", default=DEFAULTS.seed, show_default=True, help="Of the sample.")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Where to write the PNG [default: OUT_DIR/label-report.png].")
def label_report(out_dir, dataset_dir, classes, per_class, low_confidence, seed, out) -> None:
    """A picture of the teacher's labels in OUT_DIR: sample images per class with their
    confidence, histograms, low-confidence shares (and accuracy against true labels where
    the parts carry them)."""
    from imnet64.label.report import write_report

    options = ReportOptions(classes=classes, per_class=per_class,
                            low_confidence=low_confidence, seed=seed)
    report = write_report(out_dir, options, dataset_dir, out)
    d = report.data
    click.echo(f"{d.labeled} labeled, {d.rejected} rejected, {d.distinct_classes} teacher "
               f"classes; confidence < {d.low_confidence:g}: {d.low} "
               f"({100 * d.low / max(d.labeled, 1):.1f}%)")
    if d.accuracy is not None:
        click.echo(f"teacher vs truth: {100 * d.accuracy:.1f}% right on {d.truth_known} images")
    click.echo(f"report: {report.png}")
    click.echo(f"figures: {report.json}")
