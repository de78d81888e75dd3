"""`--precision auto` (issue 27): bf16 where the hardware computes it fast, fp32 elsewhere,
for training and for the labeling teacher; what runs is recorded, and a CPU without fast bf16
(forced with IMNET64_FAST_BF16=0 on any CPU) falls back to fp32 or refuses in one line."""

from __future__ import annotations

import json
from pathlib import Path

from imnet64.cluster import machine
from imnet64.cluster.machine import BF16_ENV
from imnet64.cluster.precision import choose
from imnet64.errors import UserError
from imnet64.formats.label_parts import part_paths
from imnet64.label.options import LabelOptions
from imnet64.label.run import run
from imnet64.pipeline.sample_images import write_sample

import pytest
from tiny_dataset import build_tiny_dataset

ZEN3 = """model name\t: AMD EPYC 7B13
cpu family\t: 25
model\t\t: 1
flags\t\t: fpu sse sse2 fma avx avx2
"""
ZEN4 = ZEN3.replace("model\t\t: 1", "model\t\t: 17").replace(
    "avx2", "avx2 avx512f avx512_vnni avx512_bf16")
SAPPHIRE = ZEN3.replace("avx2", "avx2 avx512f amx_tile amx_bf16 amx_int8")


# ---- the hardware's answer ------------------------------------------------------------------


def test_fast_bf16_from_cpu_flags_gpu_and_override():
    assert machine.fast_bf16(machine.cpu_flags(ZEN3), env={}) == (
        False, "no avx512_bf16 or amx_bf16")
    assert machine.fast_bf16(machine.cpu_flags(ZEN4), env={}) == (True, "CPU has avx512_bf16")
    assert machine.fast_bf16(machine.cpu_flags(SAPPHIRE), env={}) == (True, "CPU has amx_bf16")
    # a GPU decides where there is one: A100 (8.0) yes, V100 (7.0) no, whatever the CPU
    assert machine.fast_bf16(set(), {}, ((8, 0),)) == (True, "GPU compute capability 8.0")
    assert machine.fast_bf16(machine.cpu_flags(ZEN4), {}, ((7, 0),)) == (
        False, "GPU compute capability 7.0 < 8.0")
    # the override wins both ways
    assert machine.fast_bf16(machine.cpu_flags(ZEN4), {BF16_ENV: "0"}) == (
        False, f"{BF16_ENV}=0")
    assert machine.fast_bf16(machine.cpu_flags(ZEN3), {BF16_ENV: "1"})[0] is True


def test_machine_line_says_whether_bf16_is_fast_and_why():
    assert "fast bf16: no (no avx512_bf16 or amx_bf16)" in machine.describe(ZEN3, env={}).line()
    zen4 = machine.describe(ZEN4, env={})
    assert zen4.fast_bf16 and "fast bf16: yes (CPU has avx512_bf16)" in zen4.line()


def test_auto_falls_back_to_fp32_and_bf16_is_refused_or_named():
    no_bf16 = machine.describe(ZEN3, env={})
    zen4 = machine.describe(ZEN4, env={"TF_ENABLE_ONEDNN_OPTS": "1"})
    zen4_off = machine.describe(ZEN4, env={"TF_ENABLE_ONEDNN_OPTS": "0"})
    assert choose("auto", no_bf16).line() == "fp32 (auto: no avx512_bf16 or amx_bf16)"
    assert choose("auto", zen4).line() == "bf16 (auto: CPU has avx512_bf16)"
    assert choose("fp32", zen4).precision == "fp32"
    # the CPU's bf16 instructions are reached through oneDNN only: without it, auto is fp32
    assert choose("auto", zen4_off).line().startswith("fp32 (auto: oneDNN is off (")
    # training: bf16 runs anywhere (TensorFlow converts in software), named as slow
    assert choose("bf16", no_bf16).line() == (
        "bf16 (as asked; slower than fp32 here: no avx512_bf16 or amx_bf16)")
    # the teacher's bf16 pass: only with fast bf16 and oneDNN; else auto is fp32 and an
    # explicit bf16 a one-line error (never fp32 recorded as bf16)
    assert choose("auto", zen4, teacher_pass=True).precision == "bf16"
    assert choose("auto", zen4_off, teacher_pass=True).precision == "fp32"
    assert choose("auto", no_bf16, teacher_pass=True).precision == "fp32"
    for where, reason in ((no_bf16, "no fast bf16"), (zen4_off, "oneDNN, which is off")):
        with pytest.raises(UserError, match=reason) as e:
            choose("bf16", where, teacher_pass=True)
        assert "\n" not in str(e.value)


# ---- training -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return build_tiny_dataset(tmp_path_factory.mktemp("tiny"), per_class=24, shards=1)


def _cfg(dataset, run_dir: Path, **kw):
    from imnet64.train.config import TrainConfig

    kw = {"epochs": 2, **kw}
    return TrainConfig(run_dir=str(run_dir), dataset=str(dataset), widths=(4, 8, 8),
                       repeats=(1, 1, 1), warmup_epochs=0, batch_size=8,
                       lr_max=0.01, steps_per_epoch=2, log_every=0, **kw)


def _config(run_dir: Path) -> dict:
    return json.loads((run_dir / "config.json").read_text())


def test_train_auto_is_fp32_without_fast_bf16_and_a_resume_keeps_the_choice(
        dataset, tmp_path, monkeypatch):
    from imnet64.train.loop import train

    monkeypatch.setenv(BF16_ENV, "0")  # a CPU without AVX512_BF16 / AMX
    cfg = _cfg(dataset, tmp_path / "run", epochs=1)
    assert cfg.precision == "auto"  # the default
    assert train(cfg).state == "finished"
    config = _config(tmp_path / "run")
    assert config["precision"] == "fp32"
    assert config["precision_choice"] == f"auto: {BF16_ENV}=0"
    # resumed (more epochs would change the schedule: same options) on a host where auto
    # would pick bf16: the run keeps the fp32 it started with, not refused
    monkeypatch.setenv(BF16_ENV, "1")
    assert train(cfg).state == "finished"
    assert _config(tmp_path / "run")["precision"] == "fp32"
    assert "kept from the run's config.json" in _config(tmp_path / "run")["precision_choice"]
    # an explicit other precision is a changed option: refused, naming it
    with pytest.raises(UserError, match=r"--precision 'fp32' -> 'bf16'"):
        train(_cfg(dataset, tmp_path / "run", epochs=1, precision="bf16"))


def test_train_auto_is_bf16_with_fast_bf16_and_explicit_bf16_works_without(
        dataset, tmp_path, monkeypatch):
    """bf16 trains on any CPU (oneDNN on or off); auto picks it only where it is fast (fast
    bf16 and oneDNN on)."""
    from imnet64.train.history import load_history
    from imnet64.train.loop import train

    import numpy as np

    monkeypatch.setenv(BF16_ENV, "1")
    assert train(_cfg(dataset, tmp_path / "auto")).state == "finished"
    # with oneDNN off (make test's current-stack tier) auto keeps fp32 even so
    onednn_off = machine.describe().onednn is False
    assert _config(tmp_path / "auto")["precision"] == ("fp32" if onednn_off else "bf16")
    monkeypatch.setenv(BF16_ENV, "0")
    assert train(_cfg(dataset, tmp_path / "bf16", precision="bf16")).state == "finished"
    config = _config(tmp_path / "bf16")
    assert config["precision"] == "bf16"
    assert config["precision_choice"] == f"as asked; slower than fp32 here: {BF16_ENV}=0"
    history = load_history(tmp_path / "bf16")
    assert all(np.isfinite([r.loss, r.val_loss]).all() for r in history)


# ---- labeling -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher(offline_teacher_dir):
    from imnet64.teacher import load_teacher

    return load_teacher(str(offline_teacher_dir))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    write_sample(root, 40, per_folder=20)
    return root


def _label(photos, out, teacher, precision, **kw):
    return run(photos, out, LabelOptions(batch_size=16, precision=precision, **kw),
               index=0, count=1, teacher=teacher)


def _bytes(out: Path) -> tuple[bytes, bytes]:
    paths = part_paths(out, 0, 1)
    return paths.tfrecord.read_bytes(), paths.csv.read_bytes()


def test_label_without_fast_bf16_auto_is_fp32_and_bf16_is_refused(
        photos, teacher, tmp_path, monkeypatch):
    monkeypatch.setenv(BF16_ENV, "0")
    fp32, _ = _label(photos, tmp_path / "fp32", teacher, "fp32")
    auto, _ = _label(photos, tmp_path / "auto", teacher, "auto")
    assert fp32["precision"] == auto["precision"] == "fp32"
    assert auto["precision_choice"] == f"fp32 (auto: no fast bf16 ({BF16_ENV}=0))"
    assert _bytes(tmp_path / "fp32") == _bytes(tmp_path / "auto")
    with pytest.raises(UserError, match="--precision bf16 is not available here: no fast bf16"):
        _label(photos, tmp_path / "bf16", teacher, "bf16")
    assert not part_paths(tmp_path / "bf16", 0, 1).summary.exists()


def test_label_bf16_where_it_runs(photos, teacher, tmp_path):
    """On a CPU with fast bf16 and oneDNN on (this machine; the current-stack tier turns
    oneDNN off): bf16 parts are byte-identical run to run, differ from fp32 (the pass ran),
    agree with it on nearly every top-1, and are recorded as bf16; asked again in another
    precision, the done shard is named. Elsewhere bf16 is a one-line error."""
    if choose("auto", teacher_pass=True).precision != "bf16":
        with pytest.raises(UserError, match="--precision bf16 is not available here"):
            _label(photos, tmp_path / "bf16", teacher, "bf16")
        return
    from imnet64.formats.tfrecord_file import iter_records
    from imnet64.formats.tfrecord_schema import parse_labeled

    summary, _ = _label(photos, tmp_path / "bf16", teacher, "bf16")
    first = _bytes(tmp_path / "bf16")
    _label(photos, tmp_path / "bf16", teacher, "bf16", force=True)
    assert _bytes(tmp_path / "bf16") == first
    _label(photos, tmp_path / "fp32", teacher, "fp32")
    assert _bytes(tmp_path / "fp32") != first
    assert summary["precision"] == "bf16"
    assert json.loads(part_paths(tmp_path / "bf16", 0, 1).summary.read_text())[
        "precision"] == "bf16"

    def records(out):
        return [parse_labeled(raw) for _, raw in
                iter_records(part_paths(out, 0, 1).tfrecord)]

    bf16, fp32 = records(tmp_path / "bf16"), records(tmp_path / "fp32")
    same = sum(a.label == b.label for a, b in zip(bf16, fp32)) / len(fp32)
    assert same >= 0.85, same
    assert all(isinstance(p, float) for r in bf16 for p in r.topk_probs)
    notes = []
    run(photos, tmp_path / "bf16", LabelOptions(batch_size=16, precision="fp32"), index=0,
        count=1, teacher=teacher, log=notes.append)
    assert any("labeled in bf16, not fp32 (as asked)" in n for n in notes), notes
    assert _bytes(tmp_path / "bf16") == first  # skipped, not relabeled
