"""End to end: `imnet64 train` as real processes on real (tiny) records.

- SIGKILL after epoch 1, restart: resumes at epoch 2, step 0, with the reference run's LR,
  and ends with bit-identical weights and history to an uninterrupted run (--no-shuffle).
- A signal mid-epoch: checkpoint + exit 75; the restart continues at that step, same result.
- `--arch residual` trains, resumes after a preemption, evaluates and exports.

2 ranks of each engine (equal weights, rank-0-only writes, `--np 2` stop and resume):
tests/test_engines.py.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

from imnet64.cluster.preemption import REQUEUE_EXIT_CODE

import pytest
from tiny_dataset import build_tiny_dataset
from train_helpers import (
    TINY,
    assert_same_weights,
    cli,
    history,
    run,
    run_until,
    seed_lr,
    status,
)

pytestmark = pytest.mark.slow

EPOCHS, WARMUP, STEPS, LR_MAX = 3, 1, 20, 0.01
# reproducible data order so a resumed run can be compared bit for bit
COMMON = [*TINY, "--epochs", EPOCHS, "--warmup-epochs", WARMUP, "--steps-per-epoch", STEPS,
          "--no-shuffle", "--log-every", "0"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return build_tiny_dataset(tmp_path_factory.mktemp("tiny"), per_class=60)


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> tuple[Path, Path]:
    """An uninterrupted single-process run: (RUN_DIR, final weights)."""
    root = tmp_path_factory.mktemp("reference")
    run_dir, dump = root / "run", root / "weights.npz"
    result = run(cli("train", dataset, run_dir, *COMMON, "--dump-weights", dump))
    assert result.returncode == 0, result.stdout[-3000:]
    return run_dir, dump


def test_reference_run_leaves_its_files_and_follows_the_seed_schedule(reference):
    run_dir, _ = reference
    for name in ("config.json", "classes.json", "history.json", "curves.png", "status.json"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "checkpoints" / "best" / "best.json").is_file()
    hist = history(run_dir)
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    # the LR recorded at the end of epoch e is the seed's lr_schedule(e), one rank
    for h in hist:
        assert h["lr"] == pytest.approx(seed_lr(h["epoch"], LR_MAX, WARMUP, EPOCHS - WARMUP),
                                        rel=1e-9)
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert all(h["images_per_s"] > 0 for h in hist)
    assert status(run_dir)["state"] == "finished"
    assert status(run_dir)["global_step"] == EPOCHS * STEPS


def test_sigkill_after_epoch_1_resumes_at_epoch_2_like_an_uninterrupted_run(
        dataset, reference, tmp_path):
    ref_dir, ref_weights = reference
    run_dir, dump = tmp_path / "run", tmp_path / "weights.npz"
    args = cli("train", dataset, run_dir, *COMMON, "--dump-weights", dump)

    code, _ = run_until(args, lambda line: f"epoch 1/{EPOCHS} done" in line,
                        lambda proc: proc.send_signal(signal.SIGKILL))
    assert code == -signal.SIGKILL
    assert [h["epoch"] for h in history(run_dir)] == [1]
    assert status(run_dir)["state"] == "running"  # killed: it could not say anything else

    again = run(args)
    assert again.returncode == 0, again.stdout[-3000:]
    resumed = re.search(r"resumed from (\S+): epoch (\d+), step (\d+), lr (\S+)", again.stdout)
    assert resumed, again.stdout[-3000:]
    assert resumed.group(1).endswith(f"ckpt-{STEPS}")
    assert (int(resumed.group(2)), int(resumed.group(3))) == (2, 0)
    assert float(resumed.group(4)) == pytest.approx(
        seed_lr(1, LR_MAX, WARMUP, EPOCHS - WARMUP), rel=1e-5)
    got, want = history(run_dir), history(ref_dir)
    assert [h["epoch"] for h in got] == [1, 2, 3]
    for g, w in zip(got, want):
        for key in ("lr", "loss", "accuracy", "val_loss", "val_accuracy"):
            assert g[key] == pytest.approx(w[key], rel=1e-6, abs=1e-9), (g["epoch"], key)
    assert_same_weights(dump, ref_weights)


def test_signal_mid_epoch_checkpoints_exits_75_and_the_rerun_continues(
        dataset, reference, tmp_path):
    ref_dir, ref_weights = reference
    run_dir, dump = tmp_path / "run", tmp_path / "weights.npz"
    # USR2: the signal is selectable (NCCL may own USR1)
    args = cli("train", dataset, run_dir, *COMMON, "--signal", "USR2", "--dump-weights", dump)
    code, out = run_until(args, lambda line: f"epoch 2/{EPOCHS} step 5/{STEPS}" in line,
                          lambda proc: proc.send_signal(signal.SIGUSR2))
    assert code == REQUEUE_EXIT_CODE == 75, out[-3000:]
    st = status(run_dir)
    assert st["state"] == "preempted" and st["exit_code"] == 75
    assert st["epoch"] == 1 and 5 <= st["step_in_epoch"] < STEPS  # mid epoch 2
    step = st["step_in_epoch"]
    assert st["checkpoint"].endswith(f"ckpt-{STEPS + step}")
    assert Path(st["checkpoint"] + ".index").is_file()
    assert "stop requested (signal SIGUSR2)" in out

    again = run(args)
    assert again.returncode == 0, again.stdout[-3000:]
    assert f"epoch 2: resuming at step {step}/{STEPS}" in again.stdout
    # the epoch's metrics survive the interruption: same history as the reference
    got, want = history(run_dir), history(ref_dir)
    assert [h["epoch"] for h in got] == [1, 2, 3]
    for g, w in zip(got, want):
        for key in ("lr", "loss", "accuracy", "val_loss"):
            assert g[key] == pytest.approx(w[key], rel=1e-6, abs=1e-9), (g["epoch"], key)
    assert_same_weights(dump, ref_weights)
    assert status(run_dir)["state"] == "finished"


def test_residual_trains_resumes_evaluates_and_exports(dataset, tmp_path):
    run_dir = tmp_path / "run"
    args = cli("train", dataset, run_dir, "--arch", "residual", *TINY, "--epochs", 3,
               "--warmup-epochs", 1, "--log-every", 0, "--signal", "TERM")
    code, out = run_until(args, lambda line: "epoch 1/3 step 4/" in line,
                          lambda proc: proc.send_signal(signal.SIGTERM))
    assert code == REQUEUE_EXIT_CODE, out[-3000:]
    again = run(args)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "epoch 1: resuming at step" in again.stdout
    hist = history(run_dir)
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert json.loads((run_dir / "config.json").read_text())["model"]["arch"] == "residual"

    evaluated = run(cli("evaluate", run_dir, "--json"), merge_stderr=False)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads(evaluated.stdout)
    assert report["count"] == 60 and 0 <= report["top1"] <= 1

    exported = run(cli("export", run_dir, tmp_path / "model"))
    assert exported.returncode == 0, exported.stdout[-3000:]
    assert "reloaded probabilities match" in exported.stdout
    assert (tmp_path / "model" / "saved_model.pb").is_file()
