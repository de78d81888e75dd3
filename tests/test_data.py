"""The training input pipeline (imnet64.train.input_pipeline) on real shards from shard-records."""

from __future__ import annotations

import hashlib
import time
from collections import Counter

import imnet64  # noqa: F401
from imnet64.formats.manifest import load_manifest
from imnet64.records.write import ShardOptions, shard_records
from imnet64.train.input_pipeline import (
    InputOptions,
    examples_per_rank,
    records_dataset,
    steps_per_epoch,
)

import numpy as np
import pytest
import tensorflow as tf
from records_support import read_dataset, sample, write_label_out_dir

TIDS = (282, 283, 286, 405, 968)


def _ds(manifest, split, batch_size, *, rank=0, size=1, **options):
    """records_dataset with its InputOptions given as keywords."""
    return records_dataset(manifest, split, batch_size, InputOptions(**options), rank=rank,
                            size=size)


def _digest(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    """The same 120 labeled photos as 5 small train shards, as 1 shard, and raw-encoded."""
    tmp = tmp_path_factory.mktemp("data")
    root, files = sample(tmp, 120)
    labels = [(TIDS[i % 5], 0.4 + 0.5 * (i % 3) / 2) for i in range(len(files))]
    write_label_out_dir(tmp / "labels", root, files, labels)
    out = {}
    for name, opts in {
        "many": ShardOptions(shard_size_mb=0.18),
        "one": ShardOptions(shard_size_mb=64),
        "raw": ShardOptions(shard_size_mb=0.5, encoding="raw"),
    }.items():
        shard_records(tmp / "labels", tmp / name, opts)
        out[name] = load_manifest(tmp / name)
    return out


def _all(ds) -> list[tuple]:
    return [tuple(t.numpy() for t in batch) for batch in ds]


def _unbatched(ds) -> tuple[np.ndarray, np.ndarray]:
    batches = _all(ds)
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def test_yields_uint8_images_and_int32_labels_matching_the_shards(manifests):
    m = manifests["many"]
    assert len(m.split("train").shards) >= 4
    ds = _ds(m, "train", 16, shuffle=False, repeat=False, drop_remainder=False)
    assert ds.element_spec[0].dtype == tf.uint8 and ds.element_spec[1].dtype == tf.int32
    images, labels = _unbatched(ds)
    assert images.shape == (m.split("train").count, 64, 64, 3)
    # the labels are those of the records, in the same multiset
    records = read_dataset(m.root)["train"]
    assert Counter(labels.tolist()) == Counter(r["image/class/label"][0] for r in records)
    assert Counter(labels.tolist()) == dict(enumerate(m.split("train").class_counts))

    # batching drops the remainder by default; soft labels come as a third element
    ds = _ds(m, "train", 32, shuffle=False, repeat=False, with_soft_labels=True)
    batches = _all(ds)
    assert len(batches) == m.split("train").count // 32
    images, labels, soft = batches[0]
    assert images.shape == (32, 64, 64, 3) and soft.shape == (32, m.num_classes)
    assert (soft.argmax(1) == labels).all() and (soft.sum(1) <= 1.0 + 1e-6).all()


@pytest.mark.parametrize(
    "name, size, deal_records",
    [("many", 2, False), ("one", 2, True), ("many", 7, True)],
)
def test_ranks_read_disjoint_parts_that_cover_the_split(manifests, name, size, deal_records):
    """Files dealt round-robin when there are enough, else records dealt by shard()."""
    m = manifests[name]
    assert (len(m.split("train").shards) < size) == deal_records
    whole, _ = _unbatched(
        _ds(m, "train", 8, shuffle=False, repeat=False, drop_remainder=False)
    )
    parts = []
    for rank in range(size):
        images, _ = _unbatched(
            _ds(
                m,
                "train",
                8,
                rank=rank,
                size=size,
                shuffle=True,
                repeat=False,
                drop_remainder=False,
                seed=1,
            )
        )
        assert len(images) == examples_per_rank(m, "train", rank, size)
        digests = {_digest(im) for im in images}
        assert len(digests) == len(images)  # no image twice on a rank
        assert not any(digests & p for p in parts)  # disjoint from the other ranks
        parts.append(digests)
    assert set().union(*parts) == {_digest(im) for im in whole}
    steps = steps_per_epoch(m, "train", 8, size=size)
    assert steps == min(examples_per_rank(m, "train", r, size) for r in range(size)) // 8


def test_deterministic_without_shuffle_and_png_equals_raw(manifests):
    m = manifests["many"]

    def run(**kw):
        return _unbatched(
            _ds(m, "val", 4, shuffle=False, repeat=False, drop_remainder=False, **kw)
        )

    a, b = run(augment=True, seed=5), run(augment=True, seed=5)
    np.testing.assert_array_equal(a[0], b[0])
    c = run(augment=True, seed=6)
    assert not np.array_equal(a[0], c[0])
    # raw-encoded shards give the very same pixels as png ones
    png = {
        _digest(im)
        for im in _unbatched(
            _ds(m, "train", 8, shuffle=False, repeat=False, drop_remainder=False)
        )[0]
    }
    raw = {
        _digest(im)
        for im in _unbatched(
            _ds(
                manifests["raw"], "train", 8, shuffle=False, repeat=False, drop_remainder=False
            )
        )[0]
    }
    assert png == raw


def test_augment_is_a_shifted_window_of_the_zero_padded_image_maybe_flipped(manifests):
    m = manifests["many"]
    kw = dict(shuffle=False, repeat=False, drop_remainder=False)
    plain, _ = _unbatched(_ds(m, "val", 4, **kw))
    augmented, _ = _unbatched(_ds(m, "val", 4, augment=True, seed=2, **kw))
    shifts, flips = set(), 0
    for original, aug in zip(plain, augmented):
        padded = np.pad(original, [(4, 4), (4, 4), (0, 0)])
        found = [
            (dy, dx, flip)
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
            if np.array_equal(
                aug, (lambda w: w[:, ::-1] if flip else w)(padded[dy : dy + 64, dx : dx + 64])
            )
        ]
        assert found, "augmented image is no padded crop (or its mirror) of the original"
        shifts.add(found[0][:2])
        flips += found[0][2]
    assert len(shifts) > 3 and 0 < flips < len(plain)  # really random, both ways


def test_repeat_and_shuffle_keep_going_and_mix(manifests):
    m = manifests["many"]
    ds = _ds(m, "train", 32, shuffle=True, augment=True, seed=3)
    batches = list(ds.take(12))  # > 3 epochs of 108 train examples
    assert len(batches) == 12 and all(b[0].shape == (32, 64, 64, 3) for b in batches)
    ordered, _ = _unbatched(_ds(m, "train", 32, shuffle=False, repeat=False))
    assert not np.array_equal(batches[0][0].numpy(), ordered[:32])


def test_empty_split_and_bad_rank_are_clear_errors(manifests, tmp_path):
    from imnet64.errors import UserError

    with pytest.raises(UserError, match="has no split 'test'"):
        _ds(manifests["one"], "test", 8)
    with pytest.raises(UserError, match="rank 2 is not in 0..1"):
        _ds(manifests["one"], "train", 8, rank=2, size=2)


def test_deleting_an_iterator_mid_stream_does_not_wait_for_tf_data_threads(manifests):
    """Each epoch drops its pipeline's iterator. With tf.data's autotuning on, TensorFlow 2.18
    sometimes missed waking the autotuner's model thread on deletion, and the deleting
    (main) thread waited out the rest of that thread's sleep, up to an epoch's length: a
    quarter of the epochs stalled. Here: an iterator held ~0.36 s (the model thread then
    sleeps until ~0.63 s) is dropped 24 times; none may take more than 0.15 s (normal: a few
    ms). Before the fix about 1 in 6 took ~0.25 s (4 of 24 expected). One slow drop is
    allowed: a loaded machine can stall any thread once (seen in CI beside a demo run:
    0.35 s once in 24), while the bug stalls several (more than one in 24 with 93 %)."""
    m = manifests["many"]
    drops = []
    for i in range(24):
        iterator = iter(_ds(m, "train", 8, shuffle=True, repeat=True, seed=i))
        start = time.perf_counter()
        while time.perf_counter() - start < 0.36:
            next(iterator)
            time.sleep(0.02)  # a consumer slower than the pipeline, like a training step
        start = time.perf_counter()
        del iterator
        drops.append(time.perf_counter() - start)
    assert sorted(drops)[-2] < 0.15, [round(d, 3) for d in drops]
