"""`imnet64 train` and `imnet64 model-summary`: options in, library call, lines out."""

from __future__ import annotations

import logging
import math
import sys

from imnet64.cluster.engines import ENGINES, importable_engines
from imnet64.errors import UserError
from imnet64.train.config import PRECISION_CHOICES, TARGETS, TrainConfig
from imnet64.train.model_config import ARCHS

import click

DEFAULTS = TrainConfig  # its class attributes are the defaults (the options below show them)


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(
            f"{what} must be comma-separated integers, e.g. 3,3,3 (got {text!r})") from None
    if not values:
        raise UserError(f"{what} is empty")
    return values


def _setup_logging() -> None:
    """Our progress lines on stderr (not TensorFlow's own INFO chatter)."""
    logger = logging.getLogger("imnet64")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _csv(values: tuple[int, ...]) -> str:
    return ",".join(map(str, values))


def train_config(params: dict) -> TrainConfig:
    """The TrainConfig of `imnet64 train`'s parsed parameters (all but --np and --oversubscribe)."""
    options = {k: v for k, v in params.items()
               if k not in ("dataset_dir", "run_dir", "np_", "oversubscribe")}
    return TrainConfig(
        run_dir=params["run_dir"], dataset=params["dataset_dir"],
        **{**options, "repeats": _ints(options["repeats"], "--repeats"),
           "widths": _ints(options["widths"], "--widths")})


def model_options(f):
    f = click.option("--recompute", is_flag=True,
                     help="Recompute each level's activations in the backward pass "
                          "(less memory, more compute).")(f)
    f = click.option("--widths", default=_csv(DEFAULTS.widths), show_default=True,
                     help="Filters per level.")(f)
    f = click.option("--repeats", default=_csv(DEFAULTS.repeats), show_default=True,
                     help="Conv-BN-ReLU blocks per level.")(f)
    f = click.option("--arch", type=click.Choice(ARCHS), default=DEFAULTS.arch,
                     show_default=True,
                     help="The seed's VGG-style encoder, or residual blocks y = x + f(Hx + v).")(f)
    return f


@click.command()
@click.argument("dataset_dir", type=click.Path(file_okay=False))
@click.argument("run_dir", type=click.Path(file_okay=False))
@model_options
@click.option("--epochs", default=DEFAULTS.epochs, show_default=True,
              help="Epochs in all (warmup included).")
@click.option("--warmup-epochs", default=DEFAULTS.warmup_epochs, show_default=True,
              help="Linear warmup epochs before the quarter-cosine decay.")
@click.option("--batch-size", default=DEFAULTS.batch_size, show_default=True,
              help="Batch size per rank.")
@click.option("--lr-max", default=DEFAULTS.lr_max, show_default=True,
              help="Peak learning rate for one rank (x ranks unless --no-lr-scaling).")
@click.option("--lr-init-scale", "init_scale", default=DEFAULTS.init_scale, show_default=True,
              help="Warmup starts at lr_max x this.")
@click.option("--lr-final-scale", "final_scale", default=DEFAULTS.final_scale,
              show_default=True, help="The decay ends at lr_max x this.")
@click.option("--lr-scaling/--no-lr-scaling", default=DEFAULTS.lr_scaling, show_default=True,
              help="Multiply the learning rates by the number of ranks.")
@click.option("--steps-per-epoch", type=int, default=DEFAULTS.steps_per_epoch,
              help="Steps per epoch [default: one pass over the train split].")
@click.option("--precision", type=click.Choice(list(PRECISION_CHOICES)),
              default=DEFAULTS.precision, show_default=True,
              help="Mixed precision policy: auto is bf16 where the CPU (AVX512_BF16, AMX) or "
                   "GPU (compute capability >= 8.0) has fast bf16, else fp32 (doctor says "
                   "which); fp16 uses loss scaling. Loss, softmax and metrics stay float32.")
@click.option("--engine", type=click.Choice(ENGINES), default=DEFAULTS.engine, show_default=True,
              help="Who runs the collectives between ranks: Horovod, or TensorFlow's own "
                   "tf.distribute (MultiWorkerMirroredStrategy; no Horovod needed). Installed "
                   f"here: {', '.join(importable_engines())}; the default is the first.")
@click.option("--xla", is_flag=True, help="Compile the forward/backward step with XLA.")
@click.option("--seed", default=DEFAULTS.seed, show_default=True,
              help="Initial weights and data order.")
@click.option("--targets", type=click.Choice(TARGETS), default=DEFAULTS.targets,
              show_default=True,
              help="What the student learns: the teacher's top-1 (hard), its stored top-k "
                   "probabilities on the kept classes (soft), or the frozen teacher run on the "
                   "very batch the student sees (online: KL, slower). Measured in "
                   "docs/training.md; records without teacher probabilities give one-hot "
                   "targets.")
@click.option("--temperature", default=DEFAULTS.temperature, show_default=True,
              help="Softmax temperature of the soft/online targets and the student (the loss "
                   "is scaled by T^2).")
@click.option("--mixup", default=DEFAULTS.mixup, show_default=True,
              help="Mixup alpha (each batch mixed with itself rolled by one; 0: off).")
@click.option("--teacher", default=DEFAULTS.teacher,
              help="The online teacher (TF Hub handle, SavedModel folder or 'offline') "
                   "[default: the teacher that labeled the dataset].")
@click.option("--augment/--no-augment", default=DEFAULTS.augment, show_default=True,
              help="Pad-and-random-crop and horizontal flip.")
@click.option("--shuffle/--no-shuffle", default=DEFAULTS.shuffle, show_default=True,
              help="Shuffle the training examples (--no-shuffle: a fixed, reproducible order).")
@click.option("--precise-bn-batches", default=DEFAULTS.precise_bn_batches, show_default=True,
              help="Before each validation, recompute BatchNorm's statistics on N train "
                   "batches per rank (at most an epoch's steps), not the lagging moving "
                   "averages; the checkpoints keep them (0: off).")
@click.option("--keep-checkpoints", default=DEFAULTS.keep_checkpoints, show_default=True,
              help="How many recent checkpoints to keep (the best one is kept apart).")
@click.option("--checkpoint-every", default=DEFAULTS.checkpoint_every, show_default=True,
              help="Also checkpoint every N steps (0: once per epoch).")
@click.option("--signal", default=DEFAULTS.signal, show_default=True,
              help="Signal that means: checkpoint now and exit 75 to be requeued "
                   "(SIGTERM and SIGINT do the same).")
@click.option("--restart-if-damaged", is_flag=True,
              help="If RUN_DIR has checkpoints but none of them restores, start over at epoch "
                   "1 instead of stopping with an error (the damaged files are kept in "
                   "RUN_DIR/checkpoints/damaged).")
@click.option("--peak-flops", type=float, default=DEFAULTS.peak_flops,
              help="Peak FLOP/s of one rank for the MFU figure [default: estimated].")
@click.option("--log-every", default=DEFAULTS.log_every, show_default=True,
              help="Seconds between progress lines.")
@click.option("--np", "np_", default=None,
              help="Start N ranks of --engine on this machine ('auto': one per GPU) when "
                   "not already under horovodrun/mpirun/srun; at most one per GPU, else "
                   "per core, and ~1 GiB of memory each.")
@click.option("--oversubscribe", is_flag=True,
              help="Let --np start more ranks than this machine holds (see --np).")
@click.option("--dump-weights", default=DEFAULTS.dump_weights, hidden=True,
              help="Write each rank's final weights to this path ({rank} is replaced).")
@click.pass_context
def train(ctx: click.Context, **params) -> None:
    """Train the encoder on DATASET_DIR (made by shard-records) into RUN_DIR.

    Run the same command again to resume from RUN_DIR's newest checkpoint that restores
    (damaged ones are skipped, said so, and kept). On the --signal (default USR1), SIGTERM,
    SIGINT, or when RUN_DIR/stop-request appears, the ranks finish the step, write a
    checkpoint and exit with code 75 (requeue me), also during start-up.
    """
    from imnet64.cluster.preemption import StopRequest, parse_signal, stop_signals

    try:
        requeue = parse_signal(params["signal"])
    except UserError as e:
        raise UserError(f"--signal: {e}") from None
    # First thing, before TensorFlow loads: from here on a stop signal is a request to stop
    # (checkpoint what exists, exit 75), never the signal's default action.
    with StopRequest(stop_signals(requeue), requeue_signal=requeue) as stop:
        from imnet64.train.start import ranks_to_start, start_ranks

        cfg = train_config(params)
        ranks = ranks_to_start(params["np_"], params["oversubscribe"])
        if ranks:
            code = start_ranks(cfg, ranks, stop)
            if code:
                raise click.exceptions.Exit(code)
            return
        _train_here(cfg, stop)


def _train_here(cfg: TrainConfig, stop) -> None:
    """This process is one rank (of one, or of a launcher's): train, say how it ended."""
    from imnet64.cluster import launch
    from imnet64.train.loop import train as run_training

    _setup_logging()
    result = run_training(cfg, stop=stop)
    # (still inside the stop request: a signal now must not kill a run that just finished
    # with its default action; the run is complete and checkpointed, it exits 0)
    if result.rank == 0 and result.state == "finished" and result.history:
        last = result.history[-1]
        scores = (f"val_accuracy {last.val_accuracy:.4f}, val_loss {last.val_loss:.4f}"
                  if math.isfinite(last.val_loss) else
                  f"no validation (the dataset has no val split), loss {last.loss:.4f}")
        click.echo(f"done: {result.epoch} epochs, {scores}, {last.images_per_s:.1f} images/s; "
                   f"run in {cfg.run_dir}")
    code = launch.rank_exit_code(result.exit_code)
    if code:
        raise click.exceptions.Exit(code)


def _fmt_flops(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


@click.command("model-summary")
@model_options
@click.option("--num-classes", default=1000, show_default=True,
              help="Classes of the head (or take them from --dataset).")
@click.option("--dataset", "dataset_dir", default=None, type=click.Path(file_okay=False),
              help="Take the number of classes from this dataset's manifest.")
def model_summary(arch, repeats, widths, recompute, num_classes, dataset_dir) -> None:
    """The encoder's layer table with parameters and FLOPs per 64x64 image."""
    from imnet64.formats.image64 import SIZE
    from imnet64.train.model import build_model, layer_table

    if dataset_dir:
        from imnet64.formats.manifest import load_manifest

        num_classes = load_manifest(dataset_dir).num_classes
    try:
        model = build_model(num_classes, image_size=SIZE, arch=arch,
                            repeats=_ints(repeats, "--repeats"),
                            widths=_ints(widths, "--widths"), recompute=recompute)
    except ValueError as e:
        raise UserError(str(e)) from e
    rows = layer_table(model)
    header = ("layer", "type", "output shape", "params", "FLOPs")
    table = [(r.name, r.kind, str(tuple(r.output_shape)).replace("None", "B"),
              f"{r.params:,}", _fmt_flops(r.flops) if r.flops else "-") for r in rows]
    widths_ = [max(len(str(x)) for x in col) for col in zip(header, *table)]
    line = "  ".join(f"{{:<{w}}}" for w in widths_[:3]) + "  " + "  ".join(
        f"{{:>{w}}}" for w in widths_[3:])
    click.echo(f"Model: {model.name} ({arch}, repeats {repeats}, widths {widths}, "
               f"{num_classes} classes)")
    click.echo(line.format(*header))
    click.echo("-" * (sum(widths_) + 2 * (len(widths_) - 1)))
    for row in table:
        click.echo(line.format(*row))
    total = sum(r.flops for r in rows)
    trainable = sum(int(v.shape.num_elements()) for v in model.trainable_variables)
    click.echo("-" * (sum(widths_) + 2 * (len(widths_) - 1)))
    click.echo(f"params: {model.count_params():,} ({trainable:,} trainable)")
    click.echo(f"FLOPs per image: {total:,} forward ({_fmt_flops(total)}), "
               f"~{_fmt_flops(3 * total)} per training image (forward + backward)")
