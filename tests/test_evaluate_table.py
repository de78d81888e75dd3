"""evaluate's per-class table at many classes: the worst ones, not a 1000-line dump."""

from __future__ import annotations

from imnet64.train.config import PER_CLASS_SHOWN
from imnet64.train.evaluate import ClassScore, Evaluation


def _evaluation(per_class: list[ClassScore]) -> Evaluation:
    return Evaluation(run_dir="run", checkpoint="best", dataset="ds", split="val",
                      count=sum(c.count for c in per_class), loss=1.0, top1=0.5, top5=0.9, k=5,
                      per_class=per_class, most_confused=[])


def _score(i: int, count: int, correct: int) -> ClassScore:
    return ClassScore(i, f"class {i}", count, correct, correct / count if count else None)


def test_up_to_the_limit_every_class_is_listed_in_id_order():
    per_class = [_score(i, 4, i % 4) for i in range(PER_CLASS_SHOWN)]
    assert _evaluation(per_class).classes_to_show(PER_CLASS_SHOWN) == per_class


def test_at_1000_classes_the_worst_are_listed_lowest_accuracy_then_most_images_first():
    per_class = [_score(i, 10, 9) for i in range(1000)]  # 0.9 each ...
    per_class[700] = _score(700, 10, 1)   # 0.1
    per_class[5] = _score(5, 3, 0)        # 0.0 on 3 images
    per_class[900] = _score(900, 8, 0)    # 0.0 on 8 images: before class 5
    per_class[6] = _score(6, 0, 0)        # no images: no accuracy, not "worst"
    shown = _evaluation(per_class).classes_to_show(PER_CLASS_SHOWN)
    assert len(shown) == PER_CLASS_SHOWN
    assert [c.id for c in shown[:3]] == [900, 5, 700]
    assert [c.id for c in shown[3:]] == [i for i in range(1000) if i not in (5, 6, 700, 900)][
        :PER_CLASS_SHOWN - 3]
