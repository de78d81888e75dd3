"""`imnet64` entry point: a click group whose sub-commands load on first use.

Lazy loading keeps `imnet64 --help` instant (no TensorFlow import) and lets each stage keep
its commands in its own module.
"""

from __future__ import annotations

import importlib
import sys

import imnet64  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
from imnet64.errors import UserError

import click

# command name -> (module in this package, attribute, one-line help for the listing)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "teacher": ("teacher_cmd", "teacher", "Fetch, build and try the pretrained teacher."),
    "label": ("label_cmd", "label", "Pseudo-label images with the teacher (one shard)."),
    "label-status": ("label_cmd", "label_status", "Which label shards are done/missing."),
    "label-report": ("label_report_cmd", "label_report",
                     "Picture of the teacher's labels: samples, confidence."),
    "shard-records": ("records_cmd", "shard_records", "Write training TFRecord shards."),
    "inspect": ("records_cmd", "inspect", "Summarise (and verify) a dataset of shards."),
    "train": ("train_cmd", "train", "Train the encoder (Horovod or tf.distribute)."),
    "train-status": ("train_status_cmd", "train_status",
                     "What a run is doing, or how it ended (died: killed)."),
    "evaluate": ("evaluate_cmd", "evaluate", "Loss, top-1/top-5, confusions of a run."),
    "export": ("export_cmd", "export", "Export a trained run as a SavedModel or Keras file."),
    "model-summary": ("train_cmd", "model_summary", "Layer table with params and FLOPs."),
    "demo": ("demo_cmd", "demo", "Run the whole pipeline on built-in demo data."),
    "submit": ("submit_cmd", "submit", "Submit the Slurm templates with sbatch."),
    "doctor": ("doctor_cmd", "doctor", "Check what a job will see here before submitting."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(f"{__package__}.{module}"), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table above, so listing commands imports nothing heavy.
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, _, help_) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(imnet64.__version__, prog_name="imnet64")
def cli() -> None:
    """Label ~1.28 M 64x64 images with a pretrained teacher, write TFRecord shards, and train
    a small encoder on them with Horovod or tf.distribute: on a laptop, in a container, or
    across Slurm nodes.

    Typical flow: `imnet64 label` (Slurm array) -> `imnet64 shard-records` -> `imnet64 train`.
    """


def main(argv: list[str] | None = None) -> int:
    try:
        result = cli.main(args=argv, prog_name="imnet64", standalone_mode=False)
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    # click >= 8.2 returns (not raises) the code of `click.exceptions.Exit` without standalone mode
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
