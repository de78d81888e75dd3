"""`imnet64 doctor`: options in, imnet64.pipeline.doctor's report out (rich tables, or --json)."""

from __future__ import annotations

import json

from imnet64.errors import UserError

import click


def _yes_no(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "?"}[value]


Rows = list[tuple[str, str]]


def _launcher_rows(la) -> Rows:
    nodes = ", ".join(la.nodes) if la.nodes else "-"
    return [
        ("kind", la.kind + (f" (PMI: {la.pmi})" if la.pmi else "")),
        ("rank", f"{la.rank} of size {la.size}"),
        ("local rank", f"{la.local_rank} of {la.local_size} on this node"),
        ("nodes", f"{len(la.nodes) or 1}: {nodes}"),
        ("this node", f"{la.node or '-'} (SLURMD_NODENAME), host {la.host}"),
    ]


def _gpu_rows(g) -> Rows:
    slurm_gpus = " ".join(f"{k}={v}" for k, v in g.slurm.items()) or "-"
    return [
        ("TensorFlow", "not asked (--quick)" if g.tensorflow is None else str(g.tensorflow)),
        ("CUDA_VISIBLE_DEVICES", g.cuda_visible_devices if g.cuda_visible_devices is not None
         else "unset"),
        ("nvidia-smi", "not found" if g.nvidia_smi is None else str(g.nvidia_smi)),
        ("Slurm", slurm_gpus + (f" (granted here: {g.granted})" if g.granted else "")),
    ]


def _horovod_rows(h) -> Rows:
    if h.version is None:
        return [("version", "not installed")]
    build = ("not asked (--quick)" if not h.imported and not h.error else
             f"MPI {_yes_no(h.mpi)}, Gloo {_yes_no(h.gloo)}, NCCL {_yes_no(h.nccl)}")
    rows = [("version", h.version), ("built with", h.error or build),
            ("controller", f"{h.controller or '-'} ({h.controller_why})"
             if h.controller_why else "-")]
    if h.probe is not None:
        probe = h.probe.get("error") or (f"rank {h.probe['rank']} of size {h.probe['size']}, "
                                         f"local {h.probe['local_rank']} of "
                                         f"{h.probe['local_size']}")
        rows.append(("hvd.init()", probe))
    return rows


def _tensorflow_rows(tf) -> Rows:
    onednn = {True: "on", False: "off", None: "unknown"}[tf.onednn]
    return [
        ("version", tf.version or "not installed"),
        ("machine", tf.machine),
        ("built with CUDA", _yes_no(tf.built_with_cuda) if tf.imported else "not asked"),
        ("oneDNN", f"{onednn} ({tf.onednn_why})"),
        ("precision auto", tf.precision or "-"),
        ("XLA", tf.error or tf.xla),
    ]


def _teacher_rows(t) -> Rows:
    state = "present" if t.present else "missing"
    return [
        ("spec", f"{t.spec} ({t.kind})"),
        ("path", f"{t.path or '-'}: {state}"),
        ("cache", t.cache_dir or "-"),
        ("sha256", t.sha256 or "-"),
        *([("note", t.note)] if t.note else []),
    ]


def _disk_rows(d) -> Rows:
    from imnet64.pipeline.doctor import size_text

    measured = "" if d.folder == d.measured_at else f" (measured at {d.measured_at})"
    inodes = f"{d.free_inodes} inodes" if d.free_inodes is not None else "inodes not reported"
    rows = [("folder", d.folder + measured), ("free", f"{size_text(d.free_bytes)}, {inodes}")]
    if d.images is not None:
        rows += [("planned", f"{d.images} images ({d.stage}): about "
                             f"{size_text(d.needed_bytes or 0)}, {d.needed_inodes} files"),
                 ("estimate", d.estimate)]
    return rows


def _sections(report) -> list[tuple[str, Rows]]:
    """(title, rows) of every section the report has, in the order shown."""
    from imnet64.formats import provenance

    sections = [("launcher", _launcher_rows(report.launcher)), ("GPUs", _gpu_rows(report.gpus)),
                ("Horovod", _horovod_rows(report.horovod)),
                ("TensorFlow", _tensorflow_rows(report.tensorflow))]
    if report.teacher is not None:
        sections.append(("teacher", _teacher_rows(report.teacher)))
    if report.disk is not None:
        sections.append(("output folder", _disk_rows(report.disk)))
    sections.append(("provenance", [("made by" if i == 0 else "", line) for i, line
                                    in enumerate(provenance.lines(report.provenance))]))
    return sections


def _show(report) -> None:
    from rich.console import Console
    from rich.markup import escape

    # soft_wrap: long paths stay on one line in batch logs (no wrapping at 80 columns)
    console = Console(highlight=False, soft_wrap=True)
    for title, rows in _sections(report):
        console.print(f"[bold]{title}[/]")
        for key, value in rows:
            console.print(f"  [bold]{escape(key):<20}[/] {escape(value)}")
        console.print()
    for note in report.notes:
        console.print(f"note: {escape(note)}")
    if report.ok:
        console.print("[bold green]ok[/]: nothing found that would make a job fail here")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--teacher", default=None,
              help="Teacher a label job would load [$IMNET64_TEACHER, else TF Hub's "
                   "MobileNet V2].")
@click.option("--no-teacher", is_flag=True, help="Do not check a teacher (training only).")
@click.option("--out", default=None, metavar="DIR",
              help="Output folder of a planned run: free space and inodes.")
@click.option("--images", type=click.IntRange(min=0), default=None, metavar="N",
              help="Images the planned run writes into --out.")
@click.option("--stage", type=click.Choice(["label", "dataset", "all"]), default="all",
              show_default=True, help="What the run writes into --out: label parts, "
                                      "dataset shards, or both.")
@click.option("--image-bytes", type=click.IntRange(min=1), default=None, metavar="B",
              help="Mean size of one input image file [7200: a 64x64 PNG photo].")
@click.option("--shards", type=click.IntRange(min=1), default=1, show_default=True,
              help="Label shards of the planned run (files per shard).")
@click.option("--np", "np_text", default=None, metavar="N|auto",
              help="The --np `imnet64 train` would get.")
@click.option("--gpus", default=None, metavar="N|all",
              help="GPUs the job is meant to use [what Slurm granted].")
@click.option("--quick", is_flag=True,
              help="Skip importing TensorFlow and Horovod (a fraction of a second).")
@click.option("--probe", is_flag=True,
              help="Also start Horovod (hvd.init() in a child) and compare its world with "
                   "the launcher's: run it on every rank (srun ... imnet64 doctor --probe).")
@click.option("--offline", is_flag=True,
              help="Do not try to reach TF Hub when the teacher is not cached.")
def doctor(as_json, teacher, no_teacher, out, images, stage, image_bytes, shards, np_text,
           gpus, quick, probe, offline) -> None:
    """Check what a job will see and use here: launcher, ranks, GPUs, Horovod, TensorFlow,
    teacher, output folder. Exits 1 with one `problem:` line per mismatch that would make
    a job fail (on stderr; the report itself goes to stdout)."""
    from imnet64.pipeline.doctor import DEFAULT_IMAGE_BYTES, diagnose

    if images is not None and out is None:
        raise UserError("--images needs --out (the folder the run writes to)")
    if np_text is not None and np_text != "auto" and not np_text.isdigit():
        raise UserError(f"--np must be a positive number or 'auto', not {np_text!r}")
    report = diagnose(teacher=teacher, check_teacher_=not no_teacher, out=out, images=images,
                      stage=stage, image_bytes=image_bytes or DEFAULT_IMAGE_BYTES,
                      shards=shards, np_text=np_text, gpus=gpus, quick=quick, probe=probe,
                      network=not offline)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        _show(report)
    for problem in report.problems:
        click.echo(f"problem: {problem}", err=True)
    if report.problems:
        raise click.exceptions.Exit(1)
