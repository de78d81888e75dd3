"""`imnet64 demo`: run the whole pipeline on built-in real photos and print the summary."""

from __future__ import annotations

import json

from imnet64.cluster.engines import ENGINE_NAMES
from imnet64.errors import UserError
from imnet64.pipeline.demo import DemoConfig

import click

_DEFAULTS = DemoConfig(workdir="")


def _echo(message: str) -> None:
    click.echo(message, err=True)


def _print_summary(s: dict) -> None:
    out = click.echo
    out("")
    out("imnet64 demo — summary")
    out(f"  inputs {s['inputs']} = labeled {s['labeled']} + rejected {s['rejected']}"
        f"   [{'adds up' if s['counts_add_up'] else 'DOES NOT ADD UP'}]")
    for reject in s["rejects"]:
        out(f"    rejected {reject['path']}: {reject['reason']}")
    out("  teacher's top-10 classes over all labeled images:")
    for name, count in s["top10_teacher_classes"]:
        out(f"    {count:6d}  {name}")
    out(f"  classes kept ({len(s['classes_kept'])}): {', '.join(s['classes_kept'])}")
    dropped = ", ".join(f"{n} by {k.replace('_', '-')}"
                        for k, n in s["dropped_by_filters"].items() if n)
    out(f"  after filters {s['after_filters']} = train {s['train']} + val {s['val']}"
        f"   [{'adds up' if s['split_adds_up'] else 'DOES NOT ADD UP'}]"
        f"  (dropped by filters: {dropped or 'none'})")
    out(f"  student top-1 agreement with the teacher on val: "
        f"{s['student_teacher_agreement_val']:.1%} (top-5 {s['student_top5_val']:.1%}); "
        f"most frequent class share {s['majority_class_share_val']:.1%}")
    if s.get("heldout"):
        h = s["heldout"]
        out(f"  student top-1 agreement with the teacher on held-out photos: {h['agreement']:.1%}"
            f" (KL {h['kl']:.3f}; {h['count']} crops of {len(h['photos'])} photos that gave no "
            "image to training)")
    rates = ", ".join(f"{k} {v if v is not None else 'reused'}"
                      for k, v in s["images_per_second"].items())
    out(f"  images/s per stage: {rates}   "
        f"(train on {s['ranks']} {ENGINE_NAMES[s['engine']]} rank(s))")
    stages = ", ".join(f"{k} {v:.1f}" for k, v in s["stage_seconds"].items())
    out(f"  wall time: {s['seconds']:.1f} s (per stage, s: {stages})")
    out(f"  machine: {s['machine']}")
    out(f"  label report:   {s['label_report']}")
    out(f"  curves:         {s['curves']}")
    out(f"  exported model: {s['exported_model']}")
    out(f"  summary.json:   {s['workdir']}/summary.json")


@click.command()
@click.option("--workdir", default="imnet64-demo", show_default=True,
              type=click.Path(file_okay=False),
              help="Where the demo writes everything (re-runs reuse finished stages).")
@click.option("--images", default=_DEFAULTS.images, show_default=True,
              help="How many 64x64 crops of real photos to label.")
@click.option("--shards", default=_DEFAULTS.shards, show_default=True,
              help="Label shards (array tasks).")
@click.option("--classes", default=_DEFAULTS.classes, show_default=True,
              help="Keep the K most frequent teacher classes for training.")
@click.option("--epochs", default=_DEFAULTS.epochs, show_default=True, help="Training epochs.")
@click.option("--ranks", default=_DEFAULTS.ranks, show_default=True,
              help="Ranks for training: Horovod's, or tf.distribute's when horovodrun is "
                   "missing.")
@click.option("--quick", is_flag=True,
              help="A short setting (800 images, 5 classes, 16 epochs, a narrower encoder) for "
                   "smoke tests.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def demo(workdir, images, shards, classes, epochs, ranks, quick, as_json) -> None:
    """Run the whole mission on this machine with no internet and no GPU: build the offline
    teacher, cut real 64x64 photos (plus a few broken files), label them in SHARDS shards,
    write TFRecord shards, train the encoder with Horovod (tf.distribute without it),
    evaluate and export it.
    """
    from imnet64.pipeline.demo import run_demo

    if images < 50:
        raise UserError("--images must be at least 50")
    if quick:
        cfg = DemoConfig.quick(workdir, shards=shards, classes=classes, ranks=ranks)
    else:
        cfg = DemoConfig(workdir=workdir, images=images, shards=shards, classes=classes,
                         epochs=epochs, ranks=ranks)
    summary = run_demo(cfg, log=_echo)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)
