"""curves.png stays readable at 1000 classes and for a one-epoch run (issue 23)."""

import math

from imnet64.train.history import EpochRecord, accuracy_axis_top, epoch_axis_range, plot_curves


def test_accuracy_axis_follows_a_low_accuracy_run() -> None:
    # a first epoch at 1000 classes: 7 % train, 8 % val accuracy
    assert math.isclose(accuracy_axis_top([0.07, 0.08]), 1.2 * 0.08)
    assert accuracy_axis_top([0.01, math.nan]) == 0.05  # never squashed below 5 %
    assert accuracy_axis_top([0.7, 0.9]) == 1.0  # never above 1
    assert accuracy_axis_top([math.nan]) == 1.0  # nothing finite: the whole range


def test_epoch_axis_has_whole_epochs_at_its_ends() -> None:
    assert epoch_axis_range([1]) == (0.5, 1.5)
    assert epoch_axis_range([1, 2, 3]) == (0.5, 3.5)


def test_a_one_epoch_run_draws_integer_epoch_ticks(tmp_path) -> None:
    from matplotlib.figure import Figure

    record = EpochRecord(epoch=1, loss=6.3, accuracy=0.07, val_loss=5.9, val_accuracy=0.08,
                         lr=1e-5, images_per_s=68.0, seconds=14.0, mfu=None)
    drawn: list[Figure] = []
    original = Figure.savefig

    def keep(fig, *args, **kwargs):
        drawn.append(fig)
        return original(fig, *args, **kwargs)

    Figure.savefig = keep
    try:
        path = plot_curves(tmp_path, [record])
    finally:
        Figure.savefig = original
    assert path.stat().st_size > 0
    top, bottom = drawn[0].axes
    ticks = [t for t in bottom.get_xticks() if 0.5 <= t <= 1.5]
    assert ticks == [1.0]
    assert math.isclose(top.get_ylim()[1], 1.2 * 0.08)
