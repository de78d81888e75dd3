"""Precise BatchNorm: the population statistics recomputed on training batches before the
model is evaluated ("precise BN", Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm";
pycls and Detectron2 ship it).

Why (bench/precise_bn.py measured it): BatchNorm's moving statistics are an exponential
average (momentum 0.99) of the batch statistics of *past* weights. On short runs the
weights move faster than that average follows, so in inference mode the network normalises
with statistics of a network that no longer exists, and validation swings or collapses to
one class while the same weights with recomputed statistics score high.

What it computes: for each BatchNorm layer, with the model in training mode (each layer's
input normalised by the batch statistics, as in training), the mean over `batches` batches
of the batch mean E[x] and of E[x^2] (= var + mean^2), averaged over ranks; the population
variance is E[x^2] - E[x]^2. These replace the moving statistics, so every later use of the
weights (validation, the checkpoints, `evaluate`, `export`) uses them; training itself never
reads moving statistics (training mode normalises by the batch), so the weights train
exactly as without it. Every rank reads its own part of the train split and ends with the
same statistics (the averages are all-reduced). Cost: `batches` forward passes per rank.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from imnet64.cluster.world import World
from imnet64.formats.manifest import Manifest, load_manifest
from imnet64.train import input_pipeline as data

import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)


def batches_to_use(requested: int, steps_per_epoch: int) -> int:
    """`--precise-bn-batches`, capped at an epoch's steps: it never costs more forward passes
    than the epoch made training steps (on a large dataset the cap never bites)."""
    return max(0, min(requested, steps_per_epoch))


def training_batches(manifest: Manifest, batch_size: int, batches: int, *, seed: int,
                     augment: bool, rank: int = 0, size: int = 1,
                     parallelism: int | None = None) -> tf.data.Dataset:
    """`batches` full batches of this rank's part of the train split, in the shards' order
    (deterministic: the same images for the same arguments; the augmentation keyed by
    `seed`), as the recomputation reads them. Repeats the split if it is shorter."""
    options = data.InputOptions(shuffle=False, augment=augment, repeat=True,
                                drop_remainder=True, seed=seed, parallelism=parallelism)
    return data.records_dataset(manifest, "train", batch_size, options, rank=rank,
                                 size=size).take(batches)


def batchnorm_layers(model: tf.keras.Model) -> list[tf.keras.layers.BatchNormalization]:
    """Every BatchNormalization layer of `model`, nested ones included, in a fixed order."""
    return [m for m in model.submodules if isinstance(m, tf.keras.layers.BatchNormalization)]


def statistics_variables(model: tf.keras.Model) -> list[tf.Variable]:
    """The moving means and variances of `model`'s BatchNorm layers (what precise BN sets)."""
    out = []
    for bn in batchnorm_layers(model):
        out += [bn.moving_mean, bn.moving_variance]
    return out


def _batch_moments_step(model: tf.keras.Model, layers: list):
    """A tf.function images -> [(mean, mean of squares) per layer] of one batch, read off the
    layers' own moving-statistics update with momentum 0 (the update then *is* the batch's
    statistics; the layer computes them exactly as in training, fused kernel included)."""

    @tf.function
    def step(images):
        model(images, training=True)
        return [(bn.moving_mean.read_value(),
                 bn.moving_variance.read_value() + tf.square(bn.moving_mean.read_value()))
                for bn in layers]

    return step


def recompute(model: tf.keras.Model, batches: Iterable, world: World | None = None) -> int:
    """Replace `model`'s BatchNorm moving statistics by the population statistics of
    `batches` (images, or tuples whose first item is the images), averaged over ranks
    (collective when `world` has several: every rank must pass the same number of batches).
    Returns how many batches this rank used; with none, the statistics are left as they were.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    saved = [bn.momentum for bn in layers]
    old = [v.numpy() for v in statistics_variables(model)]
    sums: list[np.ndarray] | None = None
    n = 0
    try:
        for bn in layers:
            bn.momentum = 0.0
        step = _batch_moments_step(model, layers)  # traced now, with momentum 0
        for batch in batches:
            images = batch[0] if isinstance(batch, tuple | list) else batch
            moments = [t.numpy().astype(np.float64) for pair in step(images) for t in pair]
            sums = moments if sums is None else [s + m for s, m in zip(sums, moments)]
            n += 1
    finally:
        for bn, m in zip(layers, saved):
            bn.momentum = m
    sizes = [len(a) for a in old]
    flat = np.concatenate(sums) if sums is not None else np.zeros(sum(sizes))
    total_n = n
    if world is not None and world.size > 1:
        reduced = world.sum(np.concatenate([flat, [n]]), name="precise_bn")
        flat, total_n = reduced[:-1], int(reduced[-1])
    if total_n == 0:
        for v, value in zip(statistics_variables(model), old):
            v.assign(value)
        return 0
    means = np.split(flat / total_n, np.cumsum(sizes)[:-1])
    variables = statistics_variables(model)
    for i in range(0, len(variables), 2):
        mean, mean_sq = means[i], means[i + 1]
        variables[i].assign(mean.astype(np.float32))
        variables[i + 1].assign(np.maximum(mean_sq - np.square(mean), 0.0).astype(np.float32))
    return n


def precise_statistics(model: tf.keras.Model, manifest: Manifest, cfg, steps_per_epoch: int,
                       epoch: int, world: World, parallelism: int | None = None,
                       guard: Callable[[tf.data.Dataset, str], Iterable] | None = None) -> float:
    """The trainer's end-of-epoch recomputation (collective): `cfg.precise_bn_batches`
    (capped at the epoch's steps) batches per rank, keyed by (seed, epoch) so that a rerun
    of the epoch recomputes the same statistics. `guard` wraps the batches (the trainer's
    read-error guard). Returns the seconds it took (0 when off)."""
    batches = batches_to_use(cfg.precise_bn_batches, steps_per_epoch)
    if not batches:
        return 0.0
    start = time.perf_counter()
    ds = training_batches(manifest, cfg.batch_size, batches, seed=cfg.seed * 1000 + epoch,
                          augment=cfg.augment, rank=world.rank, size=world.size,
                          parallelism=parallelism)
    used = recompute(model, guard(ds, "train") if guard else ds, world)
    seconds = time.perf_counter() - start
    if world.is_chief:
        log.info("epoch %d: BatchNorm statistics recomputed on %d batch(es) x %d rank(s) of "
                 "the train split in %.2f s (precise BN)", epoch + 1, used, world.size, seconds)
    return seconds


def recompute_for_run(model: tf.keras.Model, config: dict, batches: int) -> int:
    """`evaluate`/`export --precise-bn-batches N`: recompute a trained run's statistics on
    `batches` batches of its dataset's train split (its batch size, seed and augmentation;
    one process), the same images every time, so that an evaluated and an exported model
    with the same N are the same model. For checkpoints of runs trained without it (`train`
    already stores recomputed statistics in its checkpoints)."""
    if batches <= 0:
        return 0
    manifest = load_manifest(config["dataset"])
    ds = training_batches(manifest, int(config["batch_size"]), batches,
                          seed=int(config.get("seed", 0)) * 1000,
                          augment=bool(config.get("augment", False)))
    return recompute(model, ds)
