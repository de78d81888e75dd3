"""Errors the user can fix (the CLI prints them as one line and exits non-zero), and the one
way any other exception is shortened to a line for a message, a log or status.json."""

from __future__ import annotations

import re

# TensorFlow decorates op errors with `{{function_node ...}}` and a trailing `[Op:Name] ...`
_TF_NOISE = re.compile(r"\{\{[^}]*\}\}\s*|\s*\[Op:\w+\].*$")
MAX_LINE = 300


class UserError(Exception):
    """Bad input, a missing file, an unusable option: shown as `error: <message>`."""

    exit_code = 2


def one_line(error: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message, without
    TensorFlow's function-node and op decorations (a UserError: its message alone)."""
    if isinstance(error, UserError):
        return str(error)
    lines = str(error).strip().splitlines()
    text = _TF_NOISE.sub("", lines[0]).strip() if lines else ""
    if len(text) > MAX_LINE:
        text = text[:MAX_LINE - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
