"""`imnet64 demo`: the whole mission on built-in real photos, no internet, no GPU.

Stages (each reuses its finished output on a re-run, like the real pipeline):
offline teacher -> sample images (+ a few broken files) -> label (N shards) ->
shard-records (+ label-report: a picture of the teacher's labels) -> train (Horovod ranks
when horovodrun is there, else tf.distribute's) ->
evaluate -> export.
Evaluate also measures the student against the teacher on held-out photos: crops of
photos that gave no image to training (sample_images.HELDOUT_PHOTOS; the val split's crops
come from the same photos as the training crops, so they read high).
The summary says what happened and checks that the counts add up; it names the machine
(CPU model and vector extensions, oneDNN, TensorFlow: imnet64.cluster.machine) and the wall time of
this run and of each stage, as measured.
"""

from __future__ import annotations

import collections
import os
import signal
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from imnet64 import atomic
from imnet64.cluster import launch, provenance
from imnet64.cluster.engines import ENGINE_NAMES
from imnet64.cluster.machine import machine_line
from imnet64.errors import UserError
from imnet64.formats import provenance as provenance_schema
from imnet64.formats.manifest import MANIFEST_NAME
from imnet64.progress import LogFn
from imnet64.train.config import TrainConfig
from imnet64.train.history import CURVES

SUMMARY = "summary.json"


@dataclass(frozen=True)
class DemoConfig:
    workdir: str
    images: int = 2400
    heldout_images: int = 400  # crops of HELDOUT_PHOTOS, never trained on
    shards: int = 2
    classes: int = 10  # keep the K most frequent teacher classes
    val_fraction: float = 0.2
    # ~700 optimizer steps. (Validation no longer depends on the run's length: train
    # recomputes BatchNorm's statistics before it, imnet64.train.precise_bn; with the moving
    # averages, 6 epochs of batch 32 scored below the majority class, measured.)
    epochs: int = 20
    warmup_epochs: float = 2.0
    batch_size: int = 16
    lr_max: float = 2e-3
    ranks: int = 2  # of training_engine()
    widths: tuple[int, ...] = (32, 64, 128)
    repeats: tuple[int, ...] = (2, 2, 2)
    teacher: str = "offline"
    seed: int = 0

    @classmethod
    def quick(cls, workdir: str, shards: int = 2, classes: int = 5, ranks: int = 2
              ) -> DemoConfig:
        """The short setting of `imnet64 demo --quick` and the tests: fewer images and
        classes, a narrower and shallower encoder, about a minute of training here."""
        return cls(workdir=workdir, images=800, heldout_images=200, shards=shards,
                   classes=min(classes, 5),
                   epochs=16, warmup_epochs=2.0, batch_size=16, ranks=ranks,
                   widths=(16, 32, 64), repeats=(1, 1, 1))

    def train_config(self, dataset: Path, run_dir: Path) -> TrainConfig:
        """The demo's training: its model and schedule, augmented, a progress line per 15 s."""
        return TrainConfig(
            run_dir=str(run_dir), dataset=str(dataset), epochs=self.epochs,
            warmup_epochs=self.warmup_epochs, batch_size=self.batch_size, lr_max=self.lr_max,
            widths=self.widths, repeats=self.repeats, seed=self.seed, augment=True,
            log_every=15)


def write_broken_files(folder: Path) -> list[Path]:
    """A handful of inputs the label stage must reject with a reason (never crash on)."""
    from imnet64.pipeline.sample_images import iter_sample

    folder.mkdir(parents=True, exist_ok=True)
    _, image = next(iter_sample(1))
    png = folder / ".whole.png"
    image.save(png, format="PNG")
    whole = png.read_bytes()
    png.unlink()
    files = {
        "truncated.png": whole[: len(whole) // 3],
        "empty.png": b"",
        "not-an-image.png": b"this is a text file, not a PNG\n",
        "random-bytes.jpg": bytes((i * 97 + 13) % 256 for i in range(4096)),
    }
    made = []
    for name, data in files.items():
        path = folder / name
        if not path.exists():
            atomic.write_bytes(path, data)
        made.append(path)
    link = folder / "broken-link.png"
    if not link.is_symlink():
        link.symlink_to("does-not-exist.png")
    made.append(link)
    return made


def training_engine() -> str:
    """Horovod when horovodrun is there, else TensorFlow's own tf.distribute: a stack without
    Horovod still trains on several ranks."""
    return "horovod" if launch.find_horovodrun() else "tf"


def _train_finished(run_dir: Path, epochs: int) -> bool:
    from imnet64.train.run_files import read_status

    s = read_status(run_dir)
    return s is not None and s.state == "finished" and s.epoch >= epochs


@dataclass(frozen=True)
class _Paths:
    """Where each stage of the demo writes, under the work folder."""

    work: Path

    @property
    def images(self) -> Path:
        return self.work / "images"

    @property
    def heldout(self) -> Path:
        return self.work / "heldout"

    @property
    def labels(self) -> Path:
        return self.work / "labeling"

    @property
    def dataset(self) -> Path:
        return self.work / "dataset"

    @property
    def run_dir(self) -> Path:
        return self.work / "run"

    @property
    def export_dir(self) -> Path:
        return self.work / "export" / "model"


class _Clock:
    """Wall time per stage (from the end of the previous one) and images/s where measured."""

    def __init__(self) -> None:
        self.started = self._last = time.monotonic()
        self.stage_seconds: dict[str, float] = {}
        self.rates: dict[str, float | None] = {}

    def done(self, stage: str) -> None:
        now = time.monotonic()
        self.stage_seconds[stage] = round(now - self._last, 1)
        self._last = now

    def total(self) -> float:
        return round(time.monotonic() - self.started, 1)


def run_demo(cfg: DemoConfig, log: LogFn | None = None) -> dict[str, Any]:
    """Run (or resume) the demo in cfg.workdir; return the summary (also in summary.json)."""
    log = log or (lambda message: None)
    clock = _Clock()
    log(f"machine: {machine_line()}")
    paths = _Paths(Path(cfg.workdir).resolve())
    paths.work.mkdir(parents=True, exist_ok=True)

    teacher_spec = _teacher(cfg, log)
    clock.done("teacher")
    _images(cfg, paths, log)
    clock.done("images")
    status = _label(cfg, paths, teacher_spec, log, clock)
    clock.done("label")
    manifest = _shard_records(cfg, paths, log, clock)
    report = _label_report(paths, log)
    clock.done("shard-records")
    engine = training_engine()
    ranks = _train(cfg, paths, engine, log, clock)
    clock.done("train")
    evaluation = _evaluate(paths, log, clock)
    heldout = _heldout(cfg, paths, teacher_spec, log)
    clock.done("evaluate")
    _export(paths, log)
    clock.done("export")

    summary = _summarise(cfg, status, manifest, evaluation, clock.rates, paths, ranks)
    summary["engine"] = engine
    summary["label_report"] = str(report)
    summary["heldout"] = heldout
    summary["student_teacher_agreement_heldout"] = heldout["agreement"]
    # asked now: TensorFlow is loaded and says itself whether its oneDNN kernels ran
    summary["machine"] = machine_line()
    summary["stage_seconds"] = clock.stage_seconds
    summary["seconds"] = clock.total()
    # code, host, job, and the teacher (with its weights' sha256) the labels came from
    teacher = provenance_schema.teacher_fields(manifest)
    summary[provenance_schema.KEY] = provenance.collect(**teacher)
    atomic.write_json(paths.work / SUMMARY, summary)
    return summary


def build_dataset(cfg: DemoConfig, log: LogFn | None = None) -> tuple[Path, str]:
    """The demo's stages 1-4 alone (teacher, images and held-out images, label,
    shard-records), reusing finished ones: (dataset folder, teacher spec). For benchmarks
    that train on the demo's data (bench/distill.py)."""
    log = log or (lambda message: None)
    paths, clock = _Paths(Path(cfg.workdir).resolve()), _Clock()
    paths.work.mkdir(parents=True, exist_ok=True)
    teacher_spec = _teacher(cfg, log)
    _images(cfg, paths, log)
    _label(cfg, paths, teacher_spec, log, clock)
    _shard_records(cfg, paths, log, clock)
    return paths.dataset, teacher_spec


def heldout_dir(cfg: DemoConfig) -> Path:
    """Where the demo writes its held-out photos' crops."""
    return _Paths(Path(cfg.workdir).resolve()).heldout


def _teacher(cfg: DemoConfig, log: LogFn) -> str:
    from imnet64.teacher.offline import ensure_offline_teacher

    log("1/7 teacher: real MobileNet V2 (torchvision ImageNet weights), built once")
    return str(ensure_offline_teacher()) if cfg.teacher == "offline" else cfg.teacher


def _images(cfg: DemoConfig, paths: _Paths, log: LogFn) -> None:
    from imnet64.pipeline.sample_images import HELDOUT_PHOTOS, write_sample

    log(f"2/7 images: {cfg.images} real 64x64 crops of photos shipped in packages + broken files"
        f"; {cfg.heldout_images} crops of {len(HELDOUT_PHOTOS)} other photos held out")
    write_sample(paths.images / "photos", cfg.images)
    write_broken_files(paths.images / "broken")
    write_sample(paths.heldout, cfg.heldout_images, photos=HELDOUT_PHOTOS)


def _label(cfg: DemoConfig, paths: _Paths, teacher_spec: str, log: LogFn, clock: _Clock):
    """Every label shard, the teacher loaded once for all that have work; their status."""
    from imnet64.formats.label_status import label_status
    from imnet64.label import run as label
    from imnet64.label.options import LabelOptions

    log(f"3/7 label: {cfg.shards} shards with the teacher")
    paths.labels.mkdir(parents=True, exist_ok=True)
    teacher = None
    if not label_status(paths.labels, cfg.shards).complete:
        from imnet64.teacher import load_teacher

        teacher = load_teacher(teacher_spec)
    for index in range(cfg.shards):
        summary, skipped = label.run(paths.images, paths.labels,
                                     LabelOptions(teacher_spec=teacher_spec),
                                     index=index, count=cfg.shards, teacher=teacher)
        log(f"    shard {index}: {summary['labeled']} labeled, {summary['rejected']} rejected"
            + (" (reused)" if skipped else f", {summary['images_per_second']:.1f} images/s"))
    del teacher
    status = label_status(paths.labels, cfg.shards)
    clock.rates["label"] = status.totals()["images_per_second_per_shard"]
    return status


def _shard_records(cfg: DemoConfig, paths: _Paths, log: LogFn, clock: _Clock) -> dict:
    """The dataset of the K most frequent classes; its manifest (dataset.json)."""
    from imnet64.records.write import ShardOptions, shard_records

    log(f"4/7 shard-records: keep the {cfg.classes} most frequent classes, "
        f"{cfg.val_fraction:.0%} validation")
    started = time.monotonic()
    result = shard_records(paths.labels, paths.dataset, ShardOptions(
        val_fraction=cfg.val_fraction, seed=cfg.seed, classes=cfg.classes,
        shard_size_mb=2.0))
    manifest = result.manifest or atomic.read_json(paths.dataset / MANIFEST_NAME)
    examples = sum(s["count"] for s in manifest["splits"].values())
    if result.status != "up-to-date":
        clock.rates["shard-records"] = examples / max(time.monotonic() - started, 1e-9)
    return manifest


def _label_report(paths: _Paths, log: LogFn) -> Path:
    """The picture of the teacher's labels (imnet64 label-report), the kept classes' rows."""
    from imnet64.label.report import write_report

    report = write_report(paths.labels, dataset=paths.dataset,
                          png=paths.work / "label-report.png")
    log(f"    label report (sample images per kept class, confidence): {report.png}")
    return report.png


def _train(cfg: DemoConfig, paths: _Paths, engine: str, log: LogFn, clock: _Clock) -> int:
    """Train (or resume, or reuse) the run on ranks of `engine`, as `imnet64 train --np
    --engine` would; returns the number of ranks."""
    from imnet64.train.start import ranks_to_start, start_ranks

    train_cfg = replace(cfg.train_config(paths.dataset, paths.run_dir), engine=engine)
    # the demo's 2 tiny ranks fit any machine that runs it (even a 1-core one, slowly)
    launched = ranks_to_start(cfg.ranks, oversubscribe=True)
    ranks = launched or 1
    log(f"5/7 train: {cfg.epochs} epochs on {ranks} {ENGINE_NAMES[engine]} rank(s)")
    if not _train_finished(paths.run_dir, cfg.epochs):
        if launched:
            code = start_ranks(train_cfg, launched, [signal.SIGUSR1])
            if code:
                raise UserError(f"training exited with code {code}; see the log above "
                                f"(re-run the demo to resume from {paths.run_dir})")
        else:
            _train_here(train_cfg)
    from imnet64.train.history import load_history

    history = load_history(paths.run_dir)
    clock.rates["train"] = history[-1].images_per_s if history else None
    return ranks


def _train_here(train_cfg: TrainConfig) -> None:
    from imnet64.train.loop import train

    result = train(train_cfg)
    if result.state != "finished":
        raise UserError(f"training stopped ({result.state}); re-run the demo to resume")


def _evaluate(paths: _Paths, log: LogFn, clock: _Clock):
    from imnet64.train.evaluate import evaluate_run

    log("6/7 evaluate on the validation split")
    started = time.monotonic()
    evaluation = evaluate_run(paths.run_dir, split="val")
    clock.rates["evaluate"] = evaluation.count / max(time.monotonic() - started, 1e-9)
    return evaluation


def _heldout(cfg: DemoConfig, paths: _Paths, teacher_spec: str, log: LogFn) -> dict[str, Any]:
    """The student against the teacher on the held-out photos' crops (part of evaluate)."""
    from imnet64.pipeline.sample_images import photo_stem
    from imnet64.teacher import load_teacher
    from imnet64.train.heldout import read_images, score_run

    files = sorted(paths.heldout.rglob("*.png"))
    scores = score_run(paths.run_dir, read_images(files), load_teacher(teacher_spec))
    photos = sorted({photo_stem(f.name) for f in files})
    log(f"    held-out photos: top-1 agreement with the teacher {scores.agreement:.1%}, "
        f"KL(teacher || student) {scores.kl:.3f} on {scores.count} crops of {len(photos)} "
        "photos that gave no image to training")
    return {**scores.to_json(), "photos": photos, "dir": str(paths.heldout)}


def _export(paths: _Paths, log: LogFn) -> None:
    from imnet64.train.export import export_run

    log("7/7 export a SavedModel (uint8 64x64x3 in, probabilities out)")
    if not (paths.export_dir / "saved_model.pb").exists():
        export_run(paths.run_dir, paths.export_dir)


def _summarise(cfg: DemoConfig, status, manifest: dict, evaluation, rates: dict,
               paths: _Paths, ranks: int) -> dict[str, Any]:
    totals = status.totals()
    reasons: collections.Counter[str] = collections.Counter()
    rejects: list[dict[str, str]] = []
    histogram: collections.Counter[str] = collections.Counter()
    from imnet64.formats.label_parts import part_paths
    from imnet64.label.run import read_csv_rows

    for shard in status.shards:
        for reject in (shard.summary or {}).get("rejects", []):
            reasons[reject["reason"].split(":")[0]] += 1
            rejects.append(reject)
        for _, _, class_name, _ in read_csv_rows(part_paths(status.out_dir, shard.index,
                                                            cfg.shards).csv):
            histogram[class_name] += 1
    splits = manifest["splits"]
    val_counts = splits["val"]["class_counts"]
    majority = max(val_counts) / max(1, sum(val_counts))
    return {
        "workdir": str(Path(cfg.workdir).resolve()),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
        "inputs": totals["inputs"],
        "labeled": totals["labeled"],
        "rejected": totals["rejected"],
        "counts_add_up": totals["inputs"] == totals["labeled"] + totals["rejected"],
        "rejects": rejects,
        "reject_reasons": dict(reasons),
        "top10_teacher_classes": histogram.most_common(10),
        "classes_kept": [c["name"] for c in manifest["classes"]],
        "after_filters": manifest["stats"]["examples"],
        "dropped_by_filters": manifest["stats"]["dropped"],
        "train": splits["train"]["count"],
        "val": splits["val"]["count"],
        "split_adds_up": splits["train"]["count"] + splits["val"]["count"]
        == manifest["stats"]["examples"],
        "ranks": ranks,
        "student_teacher_agreement_val": evaluation.top1,
        "student_top5_val": evaluation.top5,
        "majority_class_share_val": majority,
        "images_per_second": {k: (round(v, 1) if v else None) for k, v in rates.items()},
        "curves": str(paths.run_dir / CURVES),
        "exported_model": str(paths.export_dir),
        "teacher": manifest.get("teacher"),
        "seconds_hint": "re-running the demo reuses every finished stage",
        "pid": os.getpid(),
    }
