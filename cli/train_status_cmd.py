"""`imnet64 train-status RUN_DIR`: what the run is doing or how it ended (display only)."""

from __future__ import annotations

import json
from dataclasses import asdict

import click


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
def train_status(run_dir, as_json) -> None:
    """RUN_DIR's state: running, finished, preempted/stopped, failed, or died (status.json
    says running but its writer is gone: killed, or its disk filled up).

    Exits 0 when the run is finished, 1 otherwise.
    """
    from imnet64.errors import UserError
    from imnet64.train.run_state import current

    state = current(run_dir)
    if state is None:
        raise UserError(f"{run_dir} has no status.json: not a training run, or one that has "
                        "not started yet")
    if as_json:
        click.echo(json.dumps({"state": state.state, "why": state.why,
                               "status": asdict(state.status)}, indent=2, sort_keys=True))
    else:
        click.echo(state.line())
    if state.state != "finished":
        raise click.exceptions.Exit(1)
