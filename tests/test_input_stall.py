"""The input stall: per epoch, the share of the training loop's wall time spent blocked
waiting for the next batch, in history.json and the logs (so a GPU user sees at once
whether the input pipeline keeps up). Real in-process training runs on a tiny dataset."""

from __future__ import annotations

import logging
import time

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
from imnet64.train.loop import _Trainer

import pytest
import tensorflow as tf
from tiny_dataset import build_tiny_dataset
from train_helpers import history, train_in_process

NAP = 0.1  # seconds per batch of the deliberately slow pipeline
# steps of a few ms each: long enough epochs that the pipeline's start-up is a small part
RUN = dict(widths=(16, 32, 32), batch_size=8, steps_per_epoch=30, epochs=2, warmup_epochs=1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return build_tiny_dataset(tmp_path_factory.mktemp("tiny"), per_class=24, shards=2)


def _with_a_slow_stage(monkeypatch) -> None:
    """The trainer's own pipeline, followed by a stage that sleeps NAP per batch."""
    epoch_batches = _Trainer.epoch_batches

    def slow(self, epoch, skip):
        def nap(*batch):  # (images, labels) or, with soft targets, also their mass
            slept = tf.py_function(lambda: time.sleep(NAP) or 0, [], tf.int32)
            with tf.control_dependencies([slept]):
                return tuple(tf.identity(t) for t in batch)

        return epoch_batches(self, epoch, skip).map(nap)

    monkeypatch.setattr(_Trainer, "epoch_batches", slow)


def test_history_and_log_carry_a_low_stall_for_the_real_pipeline(dataset, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="imnet64.train.loop"):
        train_in_process(dataset, tmp_path / "run", **RUN)
    stalls = [row["input_stall_pct"] for row in history(tmp_path / "run")]
    assert len(stalls) == 2, stalls
    print("input stall % per epoch:", stalls)
    assert max(stalls) < 30, stalls  # the pipeline keeps ahead of the steps
    done = [r.getMessage() for r in caplog.records if " done: " in r.getMessage()]
    assert len(done) == 2 and all("input stall" in line for line in done), done


def test_a_slow_input_pipeline_shows_a_high_stall(dataset, tmp_path, monkeypatch):
    _with_a_slow_stage(monkeypatch)
    train_in_process(dataset, tmp_path / "run", **RUN)
    stalls = [row["input_stall_pct"] for row in history(tmp_path / "run")]
    # epoch 1's loop also traces the training step (not an input wait); the steps take some
    # time, so even a slow pipeline leaves the stall below the 100 % the loop clamps it at
    assert 50 < stalls[0] < 100 and 75 < stalls[1] < 100, stalls


def test_input_wait_times_the_blocking_next_calls_and_the_end():
    from imnet64.train.input_pipeline import InputWait

    def items():
        time.sleep(0.05)
        yield 1
        time.sleep(0.05)
        yield 2
        time.sleep(0.05)  # the end of the iteration also counts

    waited = InputWait()
    assert list(waited.timed(items())) == [1, 2]
    assert 0.14 <= waited.seconds < 0.5
