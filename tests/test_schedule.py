"""The schedule is the seed's lr_schedule, per step, and scales with workers."""

from __future__ import annotations

import math

from imnet64.train.schedule import Schedule, lr_at

import pytest

# ---- the seed notebook's function, verbatim apart from the constants becoming arguments ----


def seed_lr_schedule(epoch, lr_max=0.001, init_scale=0.01, final_scale=0.01, init_epochs=5,
                     final_epochs=25):
    TRAINING_LR_MAX = lr_max
    TRAINING_LR_INIT_EPOCHS = init_epochs
    TRAINING_LR_FINAL_EPOCHS = final_epochs
    TRAINING_LR_INIT = TRAINING_LR_MAX * init_scale
    TRAINING_LR_FINAL = TRAINING_LR_MAX * final_scale
    if epoch < TRAINING_LR_INIT_EPOCHS:
        lr = (TRAINING_LR_MAX - TRAINING_LR_INIT) * (float(epoch) / TRAINING_LR_INIT_EPOCHS) \
            + TRAINING_LR_INIT
    else:
        lr = (TRAINING_LR_MAX - TRAINING_LR_FINAL) * max(0.0, math.cos(
            ((float(epoch) - TRAINING_LR_INIT_EPOCHS) / (TRAINING_LR_FINAL_EPOCHS - 1.0))
            * (math.pi / 2.0))) + TRAINING_LR_FINAL
    return lr


@pytest.mark.parametrize(
    "params",
    [
        dict(),  # the seed's defaults: 5 + 25 epochs
        dict(lr_max=0.004, init_scale=0.1, final_scale=0.001, init_epochs=2, final_epochs=7),
        dict(lr_max=0.01, init_epochs=1, final_epochs=3),
    ],
)
@pytest.mark.parametrize("steps_per_epoch", [1, 7, 1250])
def test_per_step_schedule_equals_seed_at_every_epoch_boundary(params, steps_per_epoch):
    p = {**dict(lr_max=0.001, init_scale=0.01, final_scale=0.01, init_epochs=5,
                final_epochs=25), **params}
    s = Schedule(p["lr_max"], p["init_scale"], p["final_scale"], p["init_epochs"],
                 p["final_epochs"])
    for epoch in range(int(s.total_epochs)):
        step = epoch * steps_per_epoch
        assert s.at_step(step, steps_per_epoch) == pytest.approx(seed_lr_schedule(epoch, **p),
                                                                 rel=1e-12, abs=0)


def test_shape_warmup_linear_then_quarter_cosine_to_final():
    s = Schedule()
    assert lr_at(0, s) == pytest.approx(1e-5)
    assert lr_at(2.5, s) == pytest.approx((1e-3 - 1e-5) * 0.5 + 1e-5)  # halfway up the warmup
    assert lr_at(5, s) == pytest.approx(1e-3)  # peak after warmup
    assert lr_at(29, s) == pytest.approx(1e-5)  # lr_final reached at the last epoch (quarter)
    assert lr_at(35, s) == pytest.approx(1e-5)  # and clamped afterwards (max(0, cos))
    # strictly decreasing between the peak and the last epoch (a half cosine would turn)
    values = [s.at_step(k, 10) for k in range(50, 291)]
    assert all(a > b for a, b in zip(values, values[1:]))
    # between epoch boundaries the per-step value lies between its neighbours
    assert lr_at(1, s) < s.at_step(13, 10) < lr_at(2, s)


def test_scaled_with_workers_multiplies_every_rate():
    s = Schedule(lr_max=1e-3, warmup_epochs=2, final_epochs=4)
    s4 = s.scaled(4)
    for t in (0, 0.5, 2, 3.3, 5):
        assert lr_at(t, s4) == pytest.approx(4 * lr_at(t, s))


def test_single_epoch_after_warmup_decays_within_it():
    s = Schedule(lr_max=1.0, init_scale=0.1, final_scale=0.01, warmup_epochs=1, final_epochs=1)
    assert lr_at(1, s) == pytest.approx(1.0)
    assert lr_at(2, s) == pytest.approx(0.01)
    assert 0.01 < lr_at(1.5, s) < 1.0


def test_rejects_nonsense():
    with pytest.raises(ValueError):
        Schedule(lr_max=0)
    with pytest.raises(ValueError):
        Schedule(final_epochs=0)
