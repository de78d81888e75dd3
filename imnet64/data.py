"""The training input pipeline: a manifest's shards -> batches of (uint8 images, int32 labels).

Per rank: its shard files (dealt round-robin when there are at least `size` files, else all
files with records dealt by `Dataset.shard`) -> parallel interleave of TFRecord readers ->
shuffle buffer of serialized records -> repeat -> parse + decode (records.make_parser) and
optional augmentation (pad 4, random 64x64 crop, random horizontal flip; on uint8, with
stateless ops keyed by `seed`) -> batch -> prefetch. Images stay uint8: the model
normalises, and uint8 batches are a quarter of the bytes of float32 ones.
"""

from __future__ import annotations

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
from imnet64.errors import UserError
from imnet64.manifest import Manifest
from imnet64.records import CHANNELS, IMAGE_SIZE, make_parser

import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
PAD = 4
DEFAULT_SHUFFLE_BUFFER = 8192
READ_BUFFER = 1 << 20  # per TFRecord file


def _check_rank(rank: int, size: int) -> None:
    if size < 1 or not 0 <= rank < size:
        raise UserError(f"rank {rank} is not in 0..{size - 1}")


def _rank_files(manifest: Manifest, split: str, rank: int, size: int) -> tuple[list[str], bool]:
    """(this rank's shard files, whether records still have to be dealt with shard())."""
    files = [str(p) for p in manifest.shard_paths(split)]
    if not files:
        raise UserError(f"dataset {manifest.root} has no {split} examples")
    if len(files) >= size:
        return files[rank::size], False
    return files, True


def examples_per_rank(manifest: Manifest, split: str, rank: int, size: int) -> int:
    """How many examples `rank` of `size` sees in one pass over `split`."""
    _check_rank(rank, size)
    shards = manifest.split(split).shards
    if len(shards) >= size:
        return sum(s.examples for s in shards[rank::size])
    return len(range(rank, manifest.split(split).count, size))


def steps_per_epoch(manifest: Manifest, split: str, batch_size: int, size: int = 1) -> int:
    """Full batches every rank can take in one pass: the minimum over ranks (ranks holding
    more shards than others must not run extra allreduce steps)."""
    return min(examples_per_rank(manifest, split, r, size) for r in range(size)) // batch_size


def augment_uint8(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Zero-pad 4, random 64x64 crop, random horizontal flip; `seed` is a [2] int64 tensor."""
    padded = tf.pad(image, [[PAD, PAD], [PAD, PAD], [0, 0]])
    offsets = tf.random.stateless_uniform([2], seed, 0, 2 * PAD + 1, dtype=tf.int32)
    crop = tf.slice(padded, [offsets[0], offsets[1], 0], [IMAGE_SIZE, IMAGE_SIZE, CHANNELS])
    flip = tf.random.stateless_uniform([], seed[::-1], 0.0, 1.0) < 0.5
    return tf.cond(flip, lambda: tf.reverse(crop, axis=[1]), lambda: crop)


def training_dataset(
    manifest: Manifest,
    split: str,
    batch_size: int,
    *,
    rank: int = 0,
    size: int = 1,
    shuffle: bool = True,
    augment: bool = False,
    repeat: bool = True,
    seed: int = 0,
    drop_remainder: bool = True,
    with_soft_labels: bool = False,
    shuffle_buffer: int | None = None,
) -> tf.data.Dataset:
    """Batches (images uint8 [B,64,64,3], labels int32 [B]) for `rank` of `size`, or
    (images, labels, soft [B,C]) with `with_soft_labels`. Deterministic given `seed` when
    `shuffle` is False (with shuffle, parallel reads may also reorder for speed)."""
    _check_rank(rank, size)
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    files, deal_records = _rank_files(manifest, split, rank, size)
    deterministic = not shuffle

    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle and not deal_records:  # dealing records needs the same file order everywhere
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, buffer_size=READ_BUFFER),
        cycle_length=min(len(files), 16),
        block_length=1,
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )
    if deal_records:
        ds = ds.shard(size, rank)
    if shuffle:
        per_rank = examples_per_rank(manifest, split, rank, size)
        buffer = shuffle_buffer or min(per_rank, DEFAULT_SHUFFLE_BUFFER)
        ds = ds.shuffle(max(buffer, 1), seed=seed + 1_000_003 * rank, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    parse = make_parser(manifest.num_classes, manifest.encoding)

    def outputs(image, label, soft):
        return (image, label, soft) if with_soft_labels else (image, label)

    if augment:
        # one [2] seed per element, continuing across epochs: new crops every pass
        seeds = tf.data.Dataset.random(seed=seed + 7919 * rank).batch(2, drop_remainder=True)
        ds = tf.data.Dataset.zip((ds, seeds))

        def prepare(serialized, element_seed):
            image, label, _confidence, soft = parse(serialized)
            return outputs(augment_uint8(image, element_seed), label, soft)
    else:

        def prepare(serialized):
            image, label, _confidence, soft = parse(serialized)
            return outputs(image, label, soft)

    ds = ds.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(AUTOTUNE)
