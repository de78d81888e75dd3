"""`imnet64 submit label|shard|train|pipeline`: options in, rendered script to sbatch, ids out."""

from __future__ import annotations

from imnet64.cluster import slurm_submit as sb
from imnet64.cluster.sbatch_values import parse_count
from imnet64.cluster.slurm_stage_jobs import Common, LabelSettings, ShardSettings, TrainSettings
from imnet64.pipeline.submit import dry_run_scripts, pipeline_jobs, plan_label

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
        return parse_count(option, str(value))


COUNT = Count()


def options(*decorators):
    """One decorator adding click options in the order given (as --help lists them)."""

    def add(f):
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return add


# Options every `submit` command takes.
common_options = options(
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
)


def _common(kw: dict) -> Common:
    return Common(
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


label_options = options(
    click.option("--shards", type=COUNT, default=None, metavar="N",
                 help="Number of shards = array tasks [the template's: 8]."),
    click.option("--max-parallel", type=COUNT, default=None, metavar="K",
                 help="At most K array tasks at once."),
    click.option("--input", "input_path", default=None, metavar="PATH",
                 help="Images: folder, list file or .tar, or ImageNet64 batch files "
                 "(a file, a folder of them, the downloaded zip) [WORK/images]."),
    click.option("--label-dir", default=None, metavar="DIR",
                 help="Label output folder [WORK/labeled]."),
    click.option("--teacher", default=None,
                 help="TF Hub handle, SavedModel folder or 'offline' [the CLI's]."),
    click.option("--label-args", default=None, metavar="ARGS",
                 help='More `imnet64 label` options, e.g. "--batch-size 128".'),
    click.option("--gpus-per-task", type=COUNT, default=None, metavar="N",
                 help="GPUs of each label task for the teacher [none: CPU partitions "
                      "refuse any GPU request]."),
    click.option("--cpus-per-task", type=COUNT, default=None, metavar="N",
                 help="CPUs of each label task [the template's: 2, as measured]."),
    click.option("--mem-per-task", default=None, metavar="SIZE",
                 help="Memory of each label task, e.g. 8G [the template's: 3G, from the "
                      "measured 1.86 GB peak; see slurm/label.sh]."),
)


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


shard_options = options(
    click.option("--dataset", default=None, metavar="DIR",
                 help="Dataset output folder [WORK/dataset]."),
    click.option("--shard-args", default=None, metavar="ARGS",
                 help='More `imnet64 shard-records` options, e.g. "--val-fraction 0.05".'),
)


def _shard_settings(kw: dict, ntasks_key: str) -> ShardSettings:
    """`submit shard` takes the task count as --ntasks, `submit pipeline` as --shard-tasks."""
    return ShardSettings(label_dir=kw["label_dir"], dataset=kw["dataset"],
                         ntasks=kw[ntasks_key], args=kw["shard_args"])


@submit.command("shard")
@click.option("--label-dir", default=None, metavar="DIR",
              help="The label output folder to read [WORK/labeled].")
@shard_options
@click.option("--ntasks", type=COUNT, default=None, help="Tasks writing shards [4].")
@common_options
def submit_shard(dry_run, **kw) -> None:
    """The shard-records job (slurm/shard.sh): several tasks write the TFRecord shards."""
    _run(_shard_settings(kw, "ntasks").job(_common(kw)), dry_run)


train_options = options(
    click.option("--run-dir", default=None, metavar="DIR",
                 help="Run folder; an existing one resumes [WORK/runs/<name>-<job id>]."),
    click.option("--nodes", "-N", type=COUNT, default=None, help="Nodes [1]."),
    click.option("--ntasks-per-node", type=COUNT, default=None,
                 help="Ranks per node [one per GPU: --gpus-per-node's]."),
    click.option("--allow-gpu-mismatch", is_flag=True,
                 help="Accept --ntasks-per-node other than --gpus-per-node (idle or "
                      "shared GPUs)."),
    click.option("--gpus-per-node", type=COUNT, default=None,
                 help="GPUs per node, 0 for none [1]."),
    click.option("--signal", default=None,
                 help="Signal passed to the ranks to checkpoint [USR1; NCCL users: USR2]."),
    click.option("--signal-time", type=COUNT, default=None, metavar="S",
                 help="Seconds before the time limit to checkpoint and requeue [120]."),
    click.option("--max-restarts", type=COUNT, default=None, metavar="N",
                 help="Stop requeueing after N reruns (0: never requeue) [50]."),
    click.option("--engine", default=None, metavar="ENGINE",
                 help="Training engine: horovod (srun --mpi=pmix) or tf (tf.distribute, "
                      "one srun task per rank) [horovod]."),
    click.option("--train-args", default=None, metavar="ARGS",
                 help='More `imnet64 train` options, e.g. "--epochs 40".'),
)


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
    jobs = pipeline_jobs(_common(kw), _label_settings(kw), _shard_settings(kw, "shard_tasks"),
                         _train_settings(kw), stage_times)
    if dry_run:
        for stage, script in dry_run_scripts(jobs):
            click.echo(f"# ---- {stage} " + "-" * 60)
            click.echo(script, nl=False)
        return
    for job, job_id in zip(jobs, sb.submit_chain(jobs)):
        click.echo(f"{job.stage} {job_id}")
