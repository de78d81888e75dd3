"""The demo end to end on a small setting: real photos, the real offline teacher, label in
2 shards, shard-records, training on 2 ranks (Horovod's, or tf.distribute's on a stack
without it), evaluate, export. Everything the run writes to file descriptors 1 and 2 (this
process, horovodrun and the ranks) is kept, to check that TensorFlow's CUDA start-up lines
stay out of it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

from imnet64.pipeline.demo import DemoConfig, run_demo, training_engine

import pytest

pytestmark = pytest.mark.slow


OUTPUT = "demo-output.txt"  # in the demo's workdir: all it printed, ranks included
NO_GPU = not any(Path("/dev").glob("nvidia[0-9]*"))
# what shows that the ranks' own output is in there: horovodrun prefixes every rank's line;
# tf ranks write theirs as they are (rank 0 logs the last epoch)
RANK_OUTPUT = {"horovod": lambda epochs: "[0]<stderr>:",
               "tf": lambda epochs: f"epoch {epochs}/{epochs} done: loss"}


@contextlib.contextmanager
def _fds_to(path: Path):
    """Send fds 1 and 2 (inherited by horovodrun and the ranks) to `path` for the block,
    then replay it to the real stderr (pytest shows it when a test fails)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(path, "wb") as f:
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        sys.stderr.write(path.read_text(errors="replace"))


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory, offline_teacher_dir):
    cfg = DemoConfig.quick(str(tmp_path_factory.mktemp("demo")), shards=2, classes=5, ranks=2)
    with _fds_to(Path(cfg.workdir) / OUTPUT):
        summary = run_demo(cfg)
    return cfg, summary


def test_demo_counts_add_up(small_demo):
    cfg, s = small_demo
    assert s["inputs"] == cfg.images + 5  # the photos + the 5 broken files
    assert s["inputs"] == s["labeled"] + s["rejected"]
    assert s["rejected"] == 5 and len(s["rejects"]) == 5
    assert {Path(r["path"]).parent.name for r in s["rejects"]} == {"broken"}
    assert s["train"] + s["val"] == s["after_filters"]
    assert s["after_filters"] + sum(s["dropped_by_filters"].values()) == s["labeled"]
    assert len(s["classes_kept"]) == cfg.classes
    assert s["ranks"] == 2
    assert s["engine"] == training_engine()  # horovod where horovodrun is, else tf


def test_demo_output_has_no_tensorflow_cuda_start_up_lines(small_demo):
    """Neither horovodrun's own TensorFlow import (its build check) nor the 2 ranks print
    TensorFlow's CUDA-plugin lines; without an NVIDIA device, nor CUDA's failed cuInit."""
    cfg, s = small_demo
    out = (Path(cfg.workdir) / OUTPUT).read_text(errors="replace")
    assert RANK_OUTPUT[s["engine"]](cfg.epochs) in out  # the ranks' output is in there
    noise = ["Unable to register cu", "absl::InitializeLog", "oneDNN custom operations are on"]
    if NO_GPU:
        noise += ["failed call to cuInit", "Could not find cuda drivers"]
    found = [line for line in out.splitlines() if any(n in line for n in noise)]
    assert not found, found


def machine_line_parts() -> tuple[str, str, str]:
    """What the summary's machine line must hold, read here from /proc/cpuinfo, this process's
    CPU affinity and TensorFlow itself, not from imnet64.cluster.machine: the start (CPU model,
    with family and model on x86, and cores), the oneDNN state and the end (TF's version)."""
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port

    fields: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    cpu = fields.get("model name", "")
    if fields.get("cpu family") and fields.get("model", "").isdigit():
        cpu += f" (family {fields['cpu family']} model {fields['model']})"
    onednn = "on" if _pywrap_util_port.IsMklEnabled() else "off"
    return (f"{cpu}, {len(os.sched_getaffinity(0))} cores, ", f", oneDNN {onednn} (",
            f", TensorFlow {tf.__version__}")


def test_summary_names_the_machine_and_the_wall_time(small_demo, capsys):
    from imnet64_cli.demo_cmd import _print_summary

    cfg, s = small_demo
    start, onednn, end = machine_line_parts()
    assert s["machine"].startswith(start) and onednn in s["machine"], s["machine"]
    assert s["machine"].endswith(end), s["machine"]
    stages = ["teacher", "images", "label", "shard-records", "train", "evaluate", "export"]
    assert list(s["stage_seconds"]) == stages
    assert s["seconds"] >= sum(s["stage_seconds"].values()) - 0.5 > 0
    assert s["stage_seconds"]["train"] > 0
    assert json.loads((Path(cfg.workdir) / "summary.json").read_text())["machine"] == \
        s["machine"]
    _print_summary(s)
    printed = capsys.readouterr().out
    assert f"  machine: {s['machine']}" in printed
    assert f"  wall time: {s['seconds']:.1f} s (per stage, s: teacher " in printed


def test_student_learned_something(small_demo):
    _, s = small_demo
    # val labels are the teacher's: top-1 accuracy is the agreement with the teacher
    assert s["student_teacher_agreement_val"] > s["majority_class_share_val"] + 0.1, s


def test_demo_outputs_and_rerun_reuses_stages(small_demo):
    cfg, s = small_demo
    work = Path(cfg.workdir)
    assert Path(s["curves"]).stat().st_size > 0
    assert (Path(s["exported_model"]) / "saved_model.pb").exists()
    assert json.loads((work / "summary.json").read_text())["labeled"] == s["labeled"]
    # the label report: the kept classes of the demo's own labels
    report = json.loads(Path(s["label_report"]).with_suffix(".json").read_text())
    assert (report["labeled"], report["rejected"]) == (s["labeled"], s["rejected"])
    assert {c["name"] for c in report["classes"]} == set(s["classes_kept"])
    parts = sorted((work / "labeling" / "labels").glob("part-*"))
    stamps = {p: p.stat().st_mtime_ns for p in parts}
    history = (Path(cfg.workdir) / "run" / "history.json").read_bytes()
    again = run_demo(cfg)
    assert {p: p.stat().st_mtime_ns for p in parts} == stamps  # labels not redone
    assert (Path(cfg.workdir) / "run" / "history.json").read_bytes() == history  # no retrain
    assert again["labeled"] == s["labeled"] and again["train"] == s["train"]


def test_demo_cli_help_and_bad_option():
    out = subprocess.run([sys.executable, "-m", "imnet64_cli.main", "demo", "--images", "3"],
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == "error: --images must be at least 50"


def test_heldout_photos_share_no_source_photo_with_training(small_demo):
    """The held-out measure's crops come from photos that gave no crop to the dataset."""
    from imnet64.pipeline.sample_images import photo_stem

    cfg, s = small_demo
    work = Path(cfg.workdir)
    trained_on = {photo_stem(p.name) for p in (work / "images" / "photos").rglob("*.png")}
    held_out = {photo_stem(p.name) for p in (work / "heldout").rglob("*.png")}
    assert trained_on and held_out and not trained_on & held_out
    assert sorted(held_out) == s["heldout"]["photos"]
    assert s["heldout"]["count"] == cfg.heldout_images
    assert 0 <= s["student_teacher_agreement_heldout"] <= 1 and s["heldout"]["kl"] >= 0
