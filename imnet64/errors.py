"""Errors the user can fix. The CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """Bad input, a missing file, an unusable option: shown as `error: <message>`."""

    exit_code = 2
