"""`imnet64 submit label|shard|train|pipeline`: options in, rendered script to sbatch, ids out."""

from __future__ import annotations

from imnet64.cluster import slurm_submit as sb
from imnet64.pipeline.submit import (
    LabelSettings,
    ShardSettings,
    TrainSettings,
    dry_run_scripts,
    pipeline_jobs,
    plan_label,
    submit_chained,
)

import click


class Count(click.ParamType):
    """A whole number, refused as a one-line `error:` naming the option (like every other
    bad value of `submit`), not click's usage message."""

    name = "integer"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        opts = param.opts if param else ["value"]
        option = next((o for o in opts if o.startswith("--")), opts[0])
        return sb.parse_count(option, str(value))


COUNT = Count()


def common_options(f):
    """Options every `submit` command takes (applied bottom-up, listed top-down in --help)."""
    options = [
        click.option("--partition", "-p", default=None, help="Slurm partition."),
        click.option("--account", "-A", default=None, help="Slurm account to charge."),
        click.option("--time", "-t", "time_limit", default=None,
                     help="Time limit, e.g. 04:00:00 [the template's]."),
        click.option("--job-name", default=None, help="Job name [imnet64-<stage>]."),
        click.option("--image", default=None, metavar="FILE",
                     help="Run imnet64 from this Apptainer image (apptainer exec --nv)."),
        click.option("--cmd", default=None,
                     help="Command that runs imnet64 on the nodes [this environment's "
                          "imnet64]."),
        click.option("--work", default=None, metavar="DIR",
                     help="Base folder of the default inputs/outputs [./work on the nodes]."),
        click.option("--log-dir", default=None, metavar="DIR",
                     help="Folder for the job logs (created) [the current folder]."),
        click.option("--sbatch-arg", "sbatch_args", multiple=True, metavar="--OPT[=VALUE]",
                     help="Any other sbatch option, e.g. --sbatch-arg=--qos=high (repeatable)."),
        click.option("--template", default=None, metavar="FILE",
                     help="Your own copy of the template to render instead."),
        click.option("--dry-run", is_flag=True, help="Print the script instead of submitting."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _common(kw: dict) -> sb.Common:
    return sb.Common(
        partition=kw.pop("partition"), account=kw.pop("account"), time=kw.pop("time_limit"),
        job_name=kw.pop("job_name"), log_dir=kw.pop("log_dir"), image=kw.pop("image"),
        cmd=kw.pop("cmd"), work=kw.pop("work"), sbatch_args=list(kw.pop("sbatch_args")),
        template=kw.pop("template"))


def _run(job: sb.Job, dry_run: bool) -> None:
    if dry_run:
        click.echo(job.render(), nl=False)
    else:
        click.echo(sb.submit(job))


@click.group()
def submit() -> None:
    """Submit the Slurm templates (slurm/*.sh) with sbatch.

    Each command renders its template with the options (#SBATCH lines and IMNET64_*
    settings) and pipes it to `sbatch`; it prints the job id. --dry-run prints the script.
    """


def label_options(f):
    f = click.option("--mem-per-task", default=None, metavar="SIZE",
                     help="Memory of each label task, e.g. 8G [the template's: 3G, from the "
                          "measured 1.86 GB peak; see slurm/label.sh].")(f)
    f = click.option("--cpus-per-task", type=COUNT, default=None, metavar="N",
                     help="CPUs of each label task [the template's: 2, as measured].")(f)
    f = click.option("--gpus-per-task", type=COUNT, default=None, metavar="N",
                     help="GPUs of each label task for the teacher [none: CPU partitions "
                          "refuse any GPU request].")(f)
    f = click.option("--label-args", default=None, metavar="ARGS",
                     help='More `imnet64 label` options, e.g. "--batch-size 128".')(f)
    f = click.option("--teacher", default=None,
                     help="TF Hub handle, SavedModel folder or 'offline' [the CLI's].")(f)
    f = click.option("--label-dir", default=None, metavar="DIR",
                     help="Label output folder [WORK/labeled].")(f)
    f = click.option("--input", "input_path", default=None, metavar="PATH",
                     help="Images: folder, list file or .tar, or ImageNet64 batch files "
                     "(a file, a folder of them, the downloaded zip) [WORK/images].")(f)
    f = click.option("--max-parallel", type=COUNT, default=None, metavar="K",
                     help="At most K array tasks at once.")(f)
    f = click.option("--shards", type=COUNT, default=None, metavar="N",
                     help="Number of shards = array tasks [the template's: 8].")(f)
    return f


def _label_settings(kw: dict) -> LabelSettings:
    return LabelSettings(input_path=kw["input_path"], label_dir=kw["label_dir"],
                         teacher=kw["teacher"], shards=kw["shards"],
                         max_parallel=kw["max_parallel"], args=kw["label_args"],
                         gpus_per_task=kw["gpus_per_task"], cpus_per_task=kw["cpus_per_task"],
                         mem_per_task=kw["mem_per_task"])


@submit.command("label")
@label_options
@click.option("--missing-only", is_flag=True,
              help="Only the shards of --label-dir not done yet (needs --shards).")
@common_options
def submit_label(dry_run, missing_only, **kw) -> None:
    """The label array job (slurm/label.sh): one task per shard."""
    plan = plan_label(_common(kw), _label_settings(kw), missing_only)
    if plan.job is None:
        click.echo(f"all {kw['shards']} shards of {kw['label_dir']} are done; "
                   "nothing to submit", err=True)
        return
    if plan.only is not None:
        click.echo(f"shards to run: {sb.array_spec(plan.only)}", err=True)
    _run(plan.job, dry_run)


def shard_options(f):
    f = click.option("--shard-args", default=None, metavar="ARGS",
                     help='More `imnet64 shard-records` options, e.g. "--val-fraction 0.05".'
                     )(f)
    f = click.option("--dataset", default=None, metavar="DIR",
                     help="Dataset output folder [WORK/dataset].")(f)
    return f


@submit.command("shard")
@click.option("--label-dir", default=None, metavar="DIR",
              help="The label output folder to read [WORK/labeled].")
@shard_options
@click.option("--ntasks", type=COUNT, default=None, help="Tasks writing shards [4].")
@common_options
def submit_shard(dry_run, **kw) -> None:
    """The shard-records job (slurm/shard.sh): several tasks write the TFRecord shards."""
    settings = ShardSettings(label_dir=kw["label_dir"], dataset=kw["dataset"],
                             ntasks=kw["ntasks"], args=kw["shard_args"])
    _run(settings.job(_common(kw)), dry_run)


def train_options(f):
    f = click.option("--train-args", default=None, metavar="ARGS",
                     help='More `imnet64 train` options, e.g. "--epochs 40".')(f)
    f = click.option("--engine", default=None, metavar="ENGINE",
                     help="Training engine: horovod (srun --mpi=pmix) or tf (tf.distribute, "
                          "one srun task per rank) [horovod].")(f)
    f = click.option("--max-restarts", type=COUNT, default=None, metavar="N",
                     help="Stop requeueing after N reruns (0: never requeue) [50].")(f)
    f = click.option("--signal-time", type=COUNT, default=None, metavar="S",
                     help="Seconds before the time limit to checkpoint and requeue [120].")(f)
    f = click.option("--signal", default=None,
                     help="Signal passed to the ranks to checkpoint [USR1; NCCL users: USR2].")(f)
    f = click.option("--gpus-per-node", type=COUNT, default=None,
                     help="GPUs per node, 0 for none [1].")(f)
    f = click.option("--allow-gpu-mismatch", is_flag=True,
                     help="Accept --ntasks-per-node other than --gpus-per-node (idle or "
                          "shared GPUs).")(f)
    f = click.option("--ntasks-per-node", type=COUNT, default=None,
                     help="Ranks per node [one per GPU: --gpus-per-node's].")(f)
    f = click.option("--nodes", "-N", type=COUNT, default=None, help="Nodes [1].")(f)
    f = click.option("--run-dir", default=None, metavar="DIR",
                     help="Run folder; an existing one resumes [WORK/runs/<name>-<job id>].")(f)
    return f


def _train_settings(kw: dict) -> TrainSettings:
    return TrainSettings(dataset=kw["dataset"], run_dir=kw["run_dir"], nodes=kw["nodes"],
                         ntasks_per_node=kw["ntasks_per_node"],
                         gpus_per_node=kw["gpus_per_node"], signal=kw["signal"],
                         signal_time=kw["signal_time"], args=kw["train_args"],
                         max_restarts=kw["max_restarts"], engine=kw["engine"],
                         allow_gpu_mismatch=kw["allow_gpu_mismatch"])


@submit.command("train")
@click.option("--dataset", default=None, metavar="DIR",
              help="Dataset folder made by shard-records [WORK/dataset].")
@train_options
@common_options
def submit_train(dry_run, **kw) -> None:
    """The training job (slurm/train.sh): Horovod ranks via srun --mpi=pmix (or tf.distribute
    ranks with --engine tf), requeued on the time-limit signal."""
    _run(_train_settings(kw).job(_common(kw)), dry_run)


@submit.command("pipeline")
@label_options
@shard_options
@click.option("--shard-tasks", type=COUNT, default=None, help="Tasks of the shard job [4].")
@train_options
@click.option("--label-time", default=None, help="Time limit of each label task.")
@click.option("--shard-time", default=None, help="Time limit of the shard job.")
@click.option("--train-time", default=None, help="Time limit of each training run.")
@common_options
def submit_pipeline(dry_run, **kw) -> None:
    """label (array) -> shard-records (afterok) -> train (afterok), in one go.

    Prints one line per job: the stage and its job id. If sbatch refuses one of them, the
    ones already submitted are cancelled.
    """
    stage_times = {s: kw.pop(f"{s}_time") for s in sb.STAGES}
    shard = ShardSettings(label_dir=kw["label_dir"], dataset=kw["dataset"],
                          ntasks=kw["shard_tasks"], args=kw["shard_args"])
    jobs = pipeline_jobs(_common(kw), _label_settings(kw), shard, _train_settings(kw),
                         stage_times)
    if dry_run:
        for stage, script in dry_run_scripts(jobs):
            click.echo(f"# ---- {stage} " + "-" * 60)
            click.echo(script, nl=False)
        return
    for stage, job_id in submit_chained(jobs):
        click.echo(f"{stage} {job_id}")
