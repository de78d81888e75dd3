"""The training input pipeline: a manifest's shards -> batches of (uint8 images, int32 labels).

Per rank: its shard files (dealt round-robin when there are at least `size` files, else all
files with records dealt by `Dataset.shard`) -> parallel interleave of TFRecord readers ->
shuffle buffer of serialized records -> repeat -> batch -> parse + decode a whole batch at
once (records.make_batch_parser, the batch form of records.make_parser) and optional
augmentation (pad 4, random 64x64 crop, random horizontal flip; vectorised on uint8, with
stateless ops keyed by `seed`), in parallel over batches -> prefetch. Images stay uint8:
the model normalises, and uint8 batches are a quarter of the bytes of float32 ones.
Batching before parsing matters: per-record parse/augment ops cost more than the work.
"""

from __future__ import annotations

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
from imnet64.errors import UserError
from imnet64.manifest import Manifest
from imnet64.records import CHANNELS, IMAGE_SIZE, make_batch_parser

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


def augment_batch(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Per image: zero-pad 4, random 64x64 crop, random horizontal flip. uint8 [B,64,64,3] in
    and out; `seed` is a [2] int64 tensor (stateless: the same seed gives the same batch).

    Vectorised over the batch: the crop offsets and the flip become one gather of pixel
    indices into the padded images (no per-image ops, no float conversion).
    """
    batch = tf.shape(images)[0]
    side = IMAGE_SIZE + 2 * PAD
    padded = tf.pad(images, [[0, 0], [PAD, PAD], [PAD, PAD], [0, 0]])
    offsets = tf.random.stateless_uniform([batch, 2], seed, 0, 2 * PAD + 1, dtype=tf.int32)
    flip = tf.random.stateless_uniform([batch, 1], seed[::-1], 0, 2, dtype=tf.int32) > 0
    steps = tf.range(IMAGE_SIZE)
    rows = offsets[:, :1] + steps  # [B, 64]
    cols = offsets[:, 1:] + tf.where(flip, IMAGE_SIZE - 1 - steps, steps)  # [B, 64]
    index = tf.reshape(rows[:, :, None] * side + cols[:, None, :], [batch, -1])
    flat = tf.reshape(padded, [batch, side * side, CHANNELS])
    out = tf.gather(flat, index, axis=1, batch_dims=1)
    return tf.reshape(out, [batch, IMAGE_SIZE, IMAGE_SIZE, CHANNELS])


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
        # shard() below deals records by position: every rank must see the same order
        deterministic=deterministic or deal_records,
    )
    if deal_records:
        ds = ds.shard(size, rank)
    if shuffle:
        per_rank = examples_per_rank(manifest, split, rank, size)
        buffer = shuffle_buffer or min(per_rank, DEFAULT_SHUFFLE_BUFFER)
        ds = ds.shuffle(max(buffer, 1), seed=seed + 1_000_003 * rank, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    parse = make_batch_parser(manifest.num_classes, manifest.encoding)

    rows = batch_size if drop_remainder else None  # static batch dimension when known

    def outputs(images, labels, soft):
        images = tf.ensure_shape(images, [rows, IMAGE_SIZE, IMAGE_SIZE, CHANNELS])
        labels = tf.ensure_shape(labels, [rows])
        soft = tf.ensure_shape(soft, [rows, manifest.num_classes])
        return (images, labels, soft) if with_soft_labels else (images, labels)

    if augment:
        # one [2] seed per batch, continuing across epochs: new crops on every pass
        seeds = tf.data.Dataset.random(seed=seed + 7919 * rank).batch(2, drop_remainder=True)
        ds = tf.data.Dataset.zip((ds, seeds))

        def prepare(serialized, batch_seed):
            images, labels, _confidence, soft = parse(serialized)
            return outputs(augment_batch(images, batch_seed), labels, soft)
    else:

        def prepare(serialized):
            images, labels, _confidence, soft = parse(serialized)
            return outputs(images, labels, soft)

    ds = ds.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return ds.prefetch(AUTOTUNE)
