"""Progress display: a rich bar on a terminal, a plain line every N seconds in batch logs."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from imnet64.progress import ProgressFn

import click


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


@contextmanager
def progress(description: str, unit: str = "images", every: float = 30.0) -> Iterator[ProgressFn]:
    """Yield `update(done, total)`. On a TTY shows a rich bar; otherwise logs a line with
    rate and ETA at most every `every` seconds (and once at the end)."""
    if sys.stderr.isatty():
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            transient=False,
        ) as bar:
            task = bar.add_task(description, total=None, rate="")
            start = time.monotonic()

            def update(done: int, total: int) -> None:
                rate = done / max(time.monotonic() - start, 1e-9)
                bar.update(task, completed=done, total=total, rate=f"{rate:.1f} {unit}/s")

            yield update
        return

    start = time.monotonic()
    last = [start, -1]

    def update(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < every and done < total:
            return
        if done == last[1]:
            return
        last[0], last[1] = now, done
        rate = done / max(now - start, 1e-9)
        eta = (total - done) / rate if rate > 0 else 0.0
        click.echo(
            f"{description}: {done}/{total} {unit} ({rate:.1f} {unit}/s, ETA {_fmt_eta(eta)})",
            err=True,
        )

    yield update
