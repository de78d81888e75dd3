"""The demo end to end on a small setting: real photos, the real offline teacher, label in
2 shards, shard-records, Horovod training on 2 ranks, evaluate, export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from imnet64.demo import DemoConfig, run_demo

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory, offline_teacher_dir):
    cfg = DemoConfig.quick(str(tmp_path_factory.mktemp("demo")), shards=2, classes=5, ranks=2)
    return cfg, run_demo(cfg)


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
