"""The callback types the stages report through, so the library never prints.

The CLI passes functions that draw rich progress bars and log lines; tests pass lists' append.
"""
from __future__ import annotations

from typing import Callable

ProgressFn = Callable[[int, int], None]
"""Called with (done, total) as work advances."""

LogFn = Callable[[str], None]
"""Called with one human-readable line."""
