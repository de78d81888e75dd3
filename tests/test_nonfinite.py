"""A diverged run stops (issue 24, item 5): an absurd learning rate makes the loss or a
gradient non-finite within a step or two; training then stops at that step on every rank
with one line naming the epoch, the step and the likely cause, exits non-zero, status.json
says failed, and no checkpoint (regular or best) holding inf/NaN is ever written: the last
finite one stays the one to resume from."""

from __future__ import annotations

import math
from pathlib import Path

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
from imnet64.train.finite import ABSURD_FACTOR, Diverged, absurd_val_loss

import pytest
from tiny_dataset import build_tiny_dataset
from train_helpers import TINY, cli, run, status

ENGINES = [pytest.param("horovod", marks=pytest.mark.requires_horovod), "tf"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return build_tiny_dataset(tmp_path_factory.mktemp("tiny"), per_class=24, shards=2)


def _checkpoint_values_finite(prefix: str) -> bool:
    import numpy as np
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f" \
                and not np.isfinite(value).all():
            return False
    return True


def _all_checkpoints(run_dir: Path) -> list[str]:
    return sorted(str(p.with_suffix("")) for p in run_dir.glob("checkpoints/**/ckpt-*.index"))


def test_absurd_val_loss_rule():
    assert absurd_val_loss(math.nan, 4) and absurd_val_loss(math.inf, 4)
    assert absurd_val_loss(2.8e13, 1000)  # issue 24: --lr-max 1e6
    assert not absurd_val_loss(math.log(4), 4)  # an untrained model
    assert not absurd_val_loss(10 * math.log(4), 4)  # bad but sane
    assert absurd_val_loss(ABSURD_FACTOR * math.log(4) * 1.01, 4)


@pytest.mark.parametrize("lr_max, what", [
    (1e30, "the loss"),  # weights of ~1e29 after one step: the next forward pass overflows
    (1e300, "a weight is not finite"),  # inf as float32: one update makes the weights inf
])
def test_divergence_stops_at_the_step_and_keeps_only_finite_checkpoints(dataset, tmp_path,
                                                                         lr_max, what):
    """The first step runs at lr 1e-3 (warmup from lr_max x init_scale) and is checkpointed
    (--checkpoint-every 1); the next ones at ~lr_max / 3."""
    from imnet64.train.loop import TrainConfig, train

    run_dir = tmp_path / "run"
    cfg = TrainConfig(run_dir=str(run_dir), dataset=str(dataset), widths=(4, 8, 8),
                      repeats=(1, 1, 1), epochs=3, warmup_epochs=1, batch_size=8,
                      lr_max=lr_max, init_scale=1e-3 / lr_max, steps_per_epoch=3,
                      checkpoint_every=1, log_every=0)
    with pytest.raises(Diverged) as caught:
        train(cfg)
    message = str(caught.value)
    assert message.startswith("training diverged at epoch 1 step "), message
    assert what in message and "likely cause: the learning rate" in message
    assert "\n" not in message
    st = status(run_dir)
    assert st["state"] == "failed" and st["exit_code"] == 3 and st["error"] == message
    kept = _all_checkpoints(run_dir)
    assert kept and str(run_dir / "checkpoints" / "ckpt-1") in kept
    assert all(_checkpoint_values_finite(p) for p in kept)
    named = message.split("the last finite checkpoint ")[1].split(" is kept")[0]
    assert named in kept
    assert not (run_dir / "checkpoints" / "best").exists()


@pytest.mark.slow
def test_lr_1e30_from_the_command_line_fails_in_one_line(dataset, tmp_path):
    run_dir = tmp_path / "run"
    done = run(cli("train", dataset, run_dir, *TINY, "--lr-max", "1e30", "--epochs", 3,
                   "--warmup-epochs", 1, "--steps-per-epoch", 5, "--log-every", 0),
               merge_stderr=False)
    assert done.returncode == 3, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "training diverged at epoch 1 step" in errors[0]
    assert "done:" not in done.stdout
    assert status(run_dir)["state"] == "failed"
    assert all(_checkpoint_values_finite(p) for p in _all_checkpoints(run_dir))
    assert not (run_dir / "checkpoints" / "best").exists()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_lr_1e30_on_2_ranks_stops_both_at_the_same_step(engine, dataset, tmp_path):
    run_dir = tmp_path / "run"
    done = run(cli("train", dataset, run_dir, *TINY, "--lr-max", "1e30", "--epochs", 3,
                   "--warmup-epochs", 1, "--steps-per-epoch", 5, "--log-every", 0,
                   "--np", 2, "--engine", engine), timeout=900)
    out = done.stdout
    assert done.returncode != 0, out[-3000:]
    lines = [line for line in out.splitlines() if "training diverged at epoch 1 step" in line]
    # both ranks stop, at the same step, each with its one line
    steps = {line.split("training diverged at ")[1].split(":")[0] for line in lines}
    assert len(lines) >= 2 and len(steps) == 1, out[-4000:]
    assert "epoch 1/3 done" not in out and "done:" not in out
    st = status(run_dir)
    assert st["state"] == "failed" and "training diverged" in st["error"]
    assert all(_checkpoint_values_finite(p) for p in _all_checkpoints(run_dir))
