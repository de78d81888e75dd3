"""The trainer's small parts: signals, peak FLOP/s, self-launch arguments, resume checks,
run files, and `model-summary` (fast; one tiny in-process training)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
from imnet64.cluster import launch
from imnet64.cluster.preemption import REQUEUE_EXIT_CODE, StopRequest, parse_signal
from imnet64.errors import UserError
from imnet64.train.peak_flops import cpu_peak, gpu_peak, mfu

import pytest
from tiny_dataset import build_tiny_dataset
from train_helpers import seed_lr

CPUINFO = """processor\t: 0
cpu MHz\t\t: 1999.5
flags\t\t: fpu sse sse2 avx avx2 fma {extra}
processor\t: 1
cpu MHz\t\t: 2000.0
flags\t\t: fpu sse sse2 avx avx2 fma {extra}
"""


def test_requeue_code_is_ex_tempfail():
    assert REQUEUE_EXIT_CODE == 75


@pytest.mark.parametrize("name", ["USR1", "usr1", "SIGUSR1", str(int(signal.SIGUSR1))])
def test_parse_signal(name):
    assert parse_signal(name) is signal.SIGUSR1


def test_parse_signal_rejects_unknown():
    with pytest.raises(UserError, match="unknown signal"):
        parse_signal("USR9")


def test_stop_request_from_signal_and_file(tmp_path):
    before = signal.getsignal(signal.SIGUSR2)
    with StopRequest([signal.SIGUSR2], tmp_path / "stop-request") as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGUSR2)
        assert stop.requested and stop.reason == "signal SIGUSR2"
    assert signal.getsignal(signal.SIGUSR2) == before  # handler restored
    with StopRequest([signal.SIGUSR2], tmp_path / "stop-request") as stop:
        (tmp_path / "stop-request").write_text("x")
        assert stop.requested and "stop file" in stop.reason


def test_cpu_peak_from_cpuinfo():
    avx512 = cpu_peak(CPUINFO.format(extra="avx512f"), cores=2)
    assert avx512.flops_per_s == 2 * 2000.0e6 * 64
    assert cpu_peak(CPUINFO.format(extra=""), cores=2).flops_per_s == 2 * 2000.0e6 * 32
    plain = CPUINFO.replace(" avx2 fma", "").format(extra="")
    assert cpu_peak(plain, cores=1).flops_per_s == 2000.0e6 * 8
    assert cpu_peak("", cores=1).flops_per_s is None


def test_gpu_peak_and_mfu():
    assert gpu_peak("NVIDIA A100-SXM4-80GB", "bf16").flops_per_s == 312e12
    assert gpu_peak("Tesla V100-SXM2-16GB", "fp32").flops_per_s == 15.7e12
    assert gpu_peak("Some Future GPU", "fp32").flops_per_s is None
    # 1000 images/s x 3 x 1 GFLOP = 3 TFLOP/s of a 30 TFLOP/s peak
    assert mfu(1000, 10**9, 30e12) == pytest.approx(0.1)
    assert mfu(1000, 10**9, None) is None


def test_resolve_np(monkeypatch):
    assert launch.resolve_np(None) == 1
    assert launch.resolve_np("3") == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert launch.resolve_np("auto") == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert launch.resolve_np("auto") == 1
    for bad in ("0", "two", "-1"):
        with pytest.raises(UserError):
            launch.resolve_np(bad)


def test_ranks_get_the_same_options_back():
    from imnet64_cli.train_cmd import train, train_config

    argv = ["data", "runs/a", "--arch", "residual", "--widths", "8,16,32", "--epochs", "4",
            "--no-lr-scaling", "--xla", "--no-shuffle", "--signal", "USR2", "--np", "2",
            "--steps-per-epoch", "7"]
    ctx = train.make_context("train", list(argv))
    child = train_config(ctx.params).to_argv()
    assert "--np" not in child
    again = train.make_context("train", list(child))
    expected = {k: v for k, v in ctx.params.items() if k != "np_"}
    assert {k: v for k, v in again.params.items() if k != "np_"} == expected


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return build_tiny_dataset(tmp_path_factory.mktemp("tiny"), per_class=24, shards=1)


def test_in_process_run_files_schedule_and_resume_checks(dataset, tmp_path):
    from imnet64.train.loop import TrainConfig, train

    cfg = TrainConfig(run_dir=str(tmp_path / "run"), dataset=str(dataset), widths=(4, 8, 8),
                      repeats=(1, 1, 1), epochs=3, warmup_epochs=1, batch_size=8,
                      lr_max=0.01, steps_per_epoch=2, log_every=0)
    result = train(cfg)
    assert result.state == "finished" and result.exit_code == 0
    assert (result.epoch, result.global_step) == (3, 6)
    assert [r.lr for r in result.history] == pytest.approx(
        [seed_lr(e, 0.01, 1, 2) for e in (1, 2, 3)], rel=1e-9)
    # the same command again: nothing left to do, same history
    again = train(cfg)
    assert again.global_step == 6 and [r.loss for r in again.history] == [
        r.loss for r in result.history]
    # other options in the same RUN_DIR: refused, saying what differs
    with pytest.raises(UserError, match=r"--batch-size 8 -> 4"):
        train(TrainConfig(**{**cfg.__dict__, "batch_size": 4}))
    # more epochs changes the schedule: refused too
    with pytest.raises(UserError, match="epochs"):
        train(TrainConfig(**{**cfg.__dict__, "epochs": 4}))


@pytest.mark.parametrize("bad, message", [
    (dict(warmup_epochs=10), "--warmup-epochs"),
    (dict(precision="fp8"), "precision"),
    (dict(arch="vgg"), "arch"),
    (dict(signal="NOPE"), "unknown signal"),
])
def test_bad_options_are_user_errors(bad, message, dataset, tmp_path):
    from imnet64.train.loop import TrainConfig, train

    with pytest.raises(UserError, match=message):
        train(TrainConfig(run_dir=str(tmp_path / "r"), dataset=str(dataset), epochs=10, **bad))
    assert not (tmp_path / "r").exists()


def test_missing_dataset_is_a_user_error(tmp_path):
    from imnet64.train.loop import TrainConfig, train

    with pytest.raises(UserError, match="not an imnet64 dataset"):
        train(TrainConfig(run_dir=str(tmp_path / "r"), dataset=str(tmp_path / "nothing")))


def test_model_summary_command(capsys):
    from imnet64_cli.main import main

    assert main(["model-summary", "--widths", "8,16,32", "--repeats", "1,1,1",
                 "--num-classes", "4"]) == 0
    out = capsys.readouterr().out
    assert "level2_conv0" in out and "encoder_output" in out
    # Derived from the architecture: per level, 3x3 'same' convolutions (no bias) at the
    # level's resolution (64, then halved by each stride-2 pool), BatchNorm's 4 numbers per
    # channel; a dense head on the pooled 32 features. FLOPs = 2 per multiply-add.
    size, in_width, flops, params = 64, 3, 0, 0
    for width in (8, 16, 32):
        flops += 2 * size * size * (3 * 3 * in_width * width)
        params += 3 * 3 * in_width * width + 4 * width
        size, in_width = size // 2, width
    flops += 2 * 32 * 4
    params += 32 * 4 + 4
    assert f"FLOPs per image: {flops:,} forward" in out
    assert f"params: {params:,}" in out
    assert main(["model-summary", "--widths", "8,x"]) == 2
    assert "error: --widths must be comma-separated integers" in capsys.readouterr().err


def test_the_library_does_not_import_click():
    code = ("import imnet64.train.loop, imnet64.train.evaluate, imnet64.train.export, "
            "imnet64.cluster.launch, sys; "
            "assert 'click' not in sys.modules, 'click imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_dataset_without_val_split_trains_and_exports(dataset, tmp_path):
    import json
    import shutil

    from imnet64.train.export import export_run
    from imnet64.train.loop import TrainConfig, train

    no_val = tmp_path / "no-val"
    shutil.copytree(dataset, no_val)
    manifest = json.loads((no_val / "dataset.json").read_text())
    del manifest["splits"]["val"]
    (no_val / "dataset.json").write_text(json.dumps(manifest))
    run_dir = tmp_path / "run"
    result = train(TrainConfig(run_dir=str(run_dir), dataset=str(no_val), widths=(4, 8, 8),
                               repeats=(1, 1, 1), epochs=2, warmup_epochs=0, batch_size=8,
                               steps_per_epoch=2, log_every=0))
    assert result.state == "finished"
    rows = json.loads((run_dir / "history.json").read_text())["epochs"]
    assert [r["val_loss"] for r in rows] == [None, None]
    assert all(r["loss"] > 0 for r in rows)
    assert (run_dir / "curves.png").stat().st_size > 0
    assert not (run_dir / "checkpoints" / "best").exists()
    exported = export_run(run_dir, tmp_path / "model")  # falls back to the latest checkpoint
    assert exported.checkpoint.endswith("ckpt-4") and exported.max_abs_diff <= 1e-6


@pytest.mark.parametrize("name", ["KILL", "SIGSTOP", str(int(signal.SIGKILL))])
def test_an_uncatchable_signal_is_a_one_line_error(name, tmp_path):
    """KILL and STOP cannot be caught: `train --signal KILL` ended in a traceback (OSError:
    Invalid argument) when it installed its handler (issue 24)."""
    with pytest.raises(UserError, match="cannot be caught"):
        parse_signal(name)
    done = subprocess.run([sys.executable, "-m", "imnet64_cli.main", "train", str(tmp_path),
                           str(tmp_path / "run"), "--signal", name],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.startswith("error: --signal: SIG") and done.stderr.count("\n") == 1, \
        done.stderr
    assert not (tmp_path / "run").exists()
