"""The input pipeline of train, validation, evaluate and export (`records_dataset`): a
manifest's shards -> batches of (uint8 images, int32 labels).

Per rank: its shard files (dealt round-robin when there are at least `size` files, else all
files with records dealt by `Dataset.shard`) -> parallel interleave of TFRecord readers ->
shuffle buffer of serialized records -> repeat -> batch -> parse + decode a whole batch at
once (records.make_batch_parser, the batch form of records.make_parser) and optional
augmentation (pad 4, random 64x64 crop, random horizontal flip; vectorised on uint8, with
stateless ops keyed by `seed`), in parallel over batches -> prefetch. Images stay uint8:
the model normalises, and uint8 batches are a quarter of the bytes of float32 ones.
Batching before parsing matters: per-record parse/augment ops cost more than the work.

tf.data's autotuning is off (fixed parallelism and prefetch depth instead): with it on, every
iterator runs a model thread (Model::OptimizeLoop) that sleeps between optimisations for a
period doubling from 10 ms to 60 s, and in TensorFlow 2.18 that thread can miss the wake-up
when its iterator is deleted (its cancellation callback notifies it before the cancellation
manager reads as cancelled, so it goes back to sleep for the rest of its period), while the
deleting thread, Python's main thread holding the GIL, waits for it. Each epoch's pipeline,
validation pass and evaluation then sometimes ended with an idle wait of up to one epoch's
length (seen with py-spy/gdb: `RootDataset::Iterator::~Iterator` ->
`UnboundedThreadPool::LogicalThreadWrapper::~LogicalThreadWrapper` on the main thread, the
model thread in `Model::OptimizeLoop` -> `wait_until_system_clock`). See docs/training.md.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from imnet64.errors import UserError
from imnet64.formats.manifest import Manifest
from imnet64.formats.tfrecord_schema import CHANNELS, IMAGE_SIZE, make_batch_parser

import tensorflow as tf

PAD = 4
DEFAULT_SHUFFLE_BUFFER = 8192
READ_BUFFER = 1 << 20  # per TFRecord file
MAX_PARALLELISM = 16  # TensorFlow's own starting value for AUTOTUNE is min(16, cores)
T = TypeVar("T")


def default_parallelism(local_ranks: int = 1) -> int:
    """Parallel reads and batch decodes of one pipeline: this process's share of the cores
    it may use (`local_ranks` processes on this host share them), at most MAX_PARALLELISM."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_PARALLELISM, (cores or 1) // max(1, local_ranks)))


class InputWait:
    """Time a consumer spends blocked in next() on an iterable: the input stall. The end of
    the iteration counts too (deleting an iterator can block: see the module's docstring)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def timed(self, items: Iterable[T]) -> Iterator[T]:
        iterator = iter(items)
        while True:
            start = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                del iterator  # the deletion is timed as well
                self.seconds += time.perf_counter() - start
                return
            self.seconds += time.perf_counter() - start
            yield item


class StartedInBackground:
    """Iterate `make()`, built and started now on a background thread: building the
    pipeline, opening files, filling the shuffle buffer and decoding the first batches
    happen while the caller does other work (the trainer: the previous epoch's validation
    and end-of-epoch writes), not at the start of the epoch's training loop. An error of
    the start is raised by the first next()."""

    def __init__(self, make: Callable[[], Iterable[T]]):
        self._iterator: Iterator[T] | None = None
        self._first: list[T] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._start, args=(make,), daemon=True,
                                        name="imnet64-pipeline-start")
        self._thread.start()

    def _start(self, make: Callable[[], Iterable[T]]) -> None:
        try:
            self._iterator = iter(make())
            self._first.append(next(self._iterator))
        except StopIteration:
            pass
        except BaseException as e:  # noqa: BLE001  (handed to the consumer's thread)
            self._error = e

    def __iter__(self) -> Iterator[T]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        iterator, self._iterator = self._iterator, None
        yield from self._first
        self._first.clear()
        if iterator is not None:
            yield from iterator


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


@dataclass(frozen=True)
class InputOptions:
    """How a split is read (the defaults: training's endless shuffled stream of full batches).

    `seed` keys the file and record order and the augmentation; deterministic given the seed
    when `shuffle` is False (with shuffle, parallel reads may also reorder for speed).
    `parallelism`: files read at once and batches decoded at once (default: the cores this
    process may use, at most 16); as many batches are prefetched (at least 2).
    """

    shuffle: bool = True
    augment: bool = False  # pad 4, random crop, random horizontal flip
    repeat: bool = True  # endless: the caller takes as many batches as it needs
    drop_remainder: bool = True  # full batches only (a static batch dimension)
    seed: int = 0
    with_soft_labels: bool = False  # also the teacher's distribution [B, C]
    shuffle_buffer: int | None = None  # records (default: min(examples, 8192))
    parallelism: int | None = None


# every example once, in the shards' order, the last batch possibly smaller: evaluation
ONE_PASS = InputOptions(shuffle=False, repeat=False, drop_remainder=False)


def records_dataset(manifest: Manifest, split: str, batch_size: int,
                     options: InputOptions = InputOptions(), *, rank: int = 0,
                     size: int = 1) -> tf.data.Dataset:
    """Batches (images uint8 [B,64,64,3], labels int32 [B]) of `split` for `rank` of `size`,
    or (images, labels, soft [B,C]) with `options.with_soft_labels`."""
    _check_rank(rank, size)
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    ds = _records(manifest, split, options, rank=rank, size=size)
    ds = ds.batch(batch_size, drop_remainder=options.drop_remainder)
    rows = batch_size if options.drop_remainder else None  # static batch dimension when known
    return _decoded(ds, manifest, options, rows=rows, rank=rank)


def _records(manifest: Manifest, split: str, options: InputOptions, *, rank: int,
             size: int) -> tf.data.Dataset:
    """This rank's serialized records: read, dealt, shuffled and repeated as `options` say."""
    files, deal_records = _rank_files(manifest, split, rank, size)
    shuffle, seed = options.shuffle, options.seed
    deterministic = not shuffle
    threads = _threads(options)

    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle and not deal_records:  # dealing records needs the same file order everywhere
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    cycle = min(len(files), 16)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, buffer_size=READ_BUFFER),
        cycle_length=cycle,
        block_length=1,
        num_parallel_calls=min(cycle, threads),
        # shard() below deals records by position: every rank must see the same order
        deterministic=deterministic or deal_records,
    )
    if deal_records:
        ds = ds.shard(size, rank)
    if shuffle:
        per_rank = examples_per_rank(manifest, split, rank, size)
        buffer = options.shuffle_buffer or min(per_rank, DEFAULT_SHUFFLE_BUFFER)
        ds = ds.shuffle(max(buffer, 1), seed=seed + 1_000_003 * rank, reshuffle_each_iteration=True)
    if options.repeat:
        ds = ds.repeat()
    return ds


def _threads(options: InputOptions) -> int:
    return max(1, options.parallelism or default_parallelism())


def _decoded(ds: tf.data.Dataset, manifest: Manifest, options: InputOptions, *,
             rows: int | None, rank: int) -> tf.data.Dataset:
    """Batches of serialized records -> parsed (and augmented) tensors, prefetched."""
    parse = make_batch_parser(manifest.num_classes, manifest.encoding)
    threads = _threads(options)

    def outputs(images, labels, soft):
        images = tf.ensure_shape(images, [rows, IMAGE_SIZE, IMAGE_SIZE, CHANNELS])
        labels = tf.ensure_shape(labels, [rows])
        soft = tf.ensure_shape(soft, [rows, manifest.num_classes])
        return (images, labels, soft) if options.with_soft_labels else (images, labels)

    if options.augment:
        # one [2] seed per batch, continuing across epochs: new crops on every pass
        seeds = tf.data.Dataset.random(seed=options.seed + 7919 * rank).batch(
            2, drop_remainder=True)
        ds = tf.data.Dataset.zip((ds, seeds))

        def prepare(serialized, batch_seed):
            images, labels, _confidence, soft = parse(serialized)
            return outputs(augment_batch(images, batch_seed), labels, soft)
    else:

        def prepare(serialized):
            images, labels, _confidence, soft = parse(serialized)
            return outputs(images, labels, soft)

    ds = ds.map(prepare, num_parallel_calls=threads, deterministic=not options.shuffle)
    ds = ds.prefetch(max(2, threads))
    tf_options = tf.data.Options()
    # no autotuning model thread: deleting the iterator must never wait for it (docstring)
    tf_options.autotune.enabled = False
    return ds.with_options(tf_options)
