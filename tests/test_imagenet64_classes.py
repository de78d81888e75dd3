"""The shipped map_clsloc table and the devkit-id -> teacher-index mapping."""

from __future__ import annotations

import re

from imnet64.formats.class_names import imagenet_class_names
from imnet64.formats.imagenet64_classes import (
    devkit_classes,
    devkit_id_of_teacher,
    devkit_to_teacher,
    teacher_index,
)

import pytest


def same_name(a: str, b: str) -> bool:
    """kit_fox ~ kit fox; Shih-Tzu ~ Shih_Tzu; case ignored."""
    def norm(s: str) -> str:
        return re.sub(r"[\s_\-']+", " ", s).strip().lower()

    return norm(a) == norm(b)


def test_table_has_1000_distinct_wordnet_ids_in_devkit_order():
    classes = devkit_classes()
    assert len(classes) == 1000
    assert len({c.wnid for c in classes}) == 1000
    assert all(re.fullmatch(r"n\d{8}", c.wnid) for c in classes)
    assert [c.devkit_id for c in classes] == list(range(1, 1001))
    assert (classes[0].wnid, classes[0].name) == ("n02119789", "kit_fox")
    assert (classes[1].wnid, classes[1].name) == ("n02100735", "English_setter")
    assert (classes[-1].wnid, classes[-1].name) == ("n03255030", "dumbbell")


def test_every_devkit_class_maps_to_the_teacher_class_of_the_same_name():
    names = imagenet_class_names()
    table = devkit_to_teacher()
    assert sorted(table[1:].tolist()) == list(range(1, 1001))  # a permutation of 1..1000
    for c in devkit_classes():
        assert same_name(c.name, names[table[c.devkit_id]]), (c, names[table[c.devkit_id]])


def test_the_two_cranes_and_maillots_go_to_their_own_wordnet_ids():
    # names that occur twice in ImageNet: only the WordNet id tells them apart
    by_wnid = {c.wnid: c.devkit_id for c in devkit_classes()}
    assert teacher_index(by_wnid["n02012849"]) == 135  # crane, the bird
    assert teacher_index(by_wnid["n03126707"]) == 518  # crane, the machine
    assert teacher_index(by_wnid["n03710637"]) == 639  # maillot
    assert teacher_index(by_wnid["n03710721"]) == 640  # maillot, tank suit


def test_sorted_id_order_is_not_the_devkit_order():
    # what the classic bug does: read devkit label d as teacher class d
    names = imagenet_class_names()
    wrong = sum(same_name(c.name, names[c.devkit_id]) for c in devkit_classes())
    assert wrong < 10  # almost every class lands elsewhere
    assert teacher_index(1) == 279 and names[279] == "kit fox"
    assert devkit_id_of_teacher(279) == 1


def test_labels_outside_1_to_1000_are_refused():
    for bad in (0, 1001, -1):
        with pytest.raises(ValueError):
            teacher_index(bad)
