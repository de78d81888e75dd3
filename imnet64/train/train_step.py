"""The training step: one forward/backward pass, the gradients averaged over ranks, an Adam
update and the run's counters and epoch sums, in one tf.function (and the optimizer it
updates with). The validation step is its sibling, imnet64.train.eval_step.

Engine-agnostic: the step only calls the World's `tape` and `any_in_graph` (Horovod or
tf.distribute, imnet64.cluster.world), so bench/ times the very step `imnet64 train` runs.
"""

from __future__ import annotations

from imnet64.cluster.world import World
from imnet64.train.checkpoints import TrainState
from imnet64.train.config import TrainConfig
from imnet64.train.finite import step_is_finite
from imnet64.train.objective import HARD, Objective

import tensorflow as tf


def make_optimizer(cfg: TrainConfig) -> tf.keras.optimizers.Optimizer:
    """Adam at --lr-max (the schedule sets the rate at every step); with fp16 wrapped for
    loss scaling, which the step then applies."""
    optimizer = tf.keras.optimizers.Adam(learning_rate=cfg.lr_max)
    if cfg.precision == "fp16":
        optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer


def make_train_step(model: tf.keras.Model, optimizer, world: World, state: TrainState,
                    objective: Objective = HARD, *, fp16: bool = False, xla: bool = False):
    """A tf.function (images, labels, stop[, teacher_mass]) -> (loss, stop on any rank,
    finite on every rank): a batch as the input pipeline yields it (with the soft targets
    also the kept-class teacher mass [B, C]), and this rank's stop flag. `finite`: the loss
    and the gradients (imnet64.train.finite), OR-ed over ranks in the stop flag's allreduce.

    The loss is `objective`'s (for hard targets the fused sparse softmax cross-entropy on
    logits, as always); its targets (the online teacher's forward pass, mixup) are computed
    before the tape. With `xla` the student's forward and backward computation is compiled
    by XLA; the teacher, the allreduce and the update stay outside it (Horovod's ops are
    not XLA ops).
    """
    variables = model.trainable_variables

    def forward(images, labels, targets):
        logits = tf.cast(model(images, training=True), tf.float32)
        losses, kl = objective.losses(logits, labels, targets)
        hits = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels)
        kl_sum = tf.reduce_sum(kl) if kl is not None else tf.constant(0.0)
        return tf.reduce_mean(losses), tf.reduce_sum(tf.cast(hits, tf.float32)), kl_sum

    if xla:
        forward = tf.function(forward, jit_compile=True)

    @tf.function
    def step(images, labels, stop, teacher_mass=None):
        images, labels, targets = objective.prepare((images, labels, teacher_mass),
                                                    state.global_step)
        with tf.GradientTape() as tape:
            loss, correct, kl_sum = forward(images, labels, targets)
            objective_value = optimizer.get_scaled_loss(loss) if fp16 else loss
        grads = world.tape(tape).gradient(objective_value, variables)
        if fp16:
            grads = optimizer.get_unscaled_gradients(grads)
        finite = step_is_finite(loss, grads, check_grads=not fp16)
        optimizer.apply_gradients(zip(grads, variables))
        n = tf.cast(tf.shape(labels)[0], tf.float64)
        state.loss_sum.assign_add(tf.cast(loss, tf.float64) * n)
        state.correct.assign_add(tf.cast(correct, tf.float64))
        state.seen.assign_add(n)
        if state.kl_sum is not None:
            state.kl_sum.assign_add(tf.cast(kl_sum, tf.float64))
        state.global_step.assign_add(1)
        state.step_in_epoch.assign_add(1)
        # one allreduce for both flags: [stop on any rank, non-finite on any rank]
        flags = world.any_in_graph(tf.stack([stop, tf.logical_not(finite)]))
        return loss, flags[0], tf.logical_not(flags[1])

    return step
