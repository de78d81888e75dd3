"""`imnet64 export RUN_DIR OUT`: SavedModel (serving signature) or .keras, checked on reload."""

from __future__ import annotations

from imnet64.train.config import CHECKPOINT, EXPORT_FORMATS

import click


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS),
              default=EXPORT_FORMATS[0], show_default=True)
@click.option("--encoder-only", is_flag=True,
              help="Export the encoder up to the pooled features (no head).")
@click.option("--checkpoint", default=CHECKPOINT, show_default=True,
              help="'best' (lowest val loss), 'latest' (the newest one that reads back intact), "
                   "or a checkpoint path.")
@click.option("--precise-bn-batches", default=0, show_default=True,
              help="Recompute BatchNorm's statistics on N batches of the run's train "
                   "split (for runs trained with --precise-bn-batches 0; 0: the "
                   "checkpoint's own).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def export(run_dir, out, fmt, encoder_only, checkpoint, precise_bn_batches, force) -> None:
    """Export RUN_DIR's model to OUT; reloads it and checks the outputs match to 1e-6."""
    from imnet64.train.export import export_run

    result = export_run(run_dir, out, fmt=fmt, encoder_only=encoder_only,
                        checkpoint=checkpoint, force=force,
                        precise_bn_batches=precise_bn_batches)
    what = "encoder" if encoder_only else "classifier"
    click.echo(f"exported {what} ({result.format}) to {result.path}: reloaded {result.output} "
               f"match on {result.checked_images} images (max |diff| {result.max_abs_diff:.2g})")
    click.echo(f"provenance and origin: {result.metadata}")
