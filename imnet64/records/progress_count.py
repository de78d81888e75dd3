"""Work reported in increments, shown as (done, total): shard writing counts examples,
`inspect --verify` counts bytes hashed."""

from __future__ import annotations

from imnet64.progress import ProgressFn


class ProgressCount:
    """Call with each increment; `progress` (if any) is told (done so far, total)."""

    def __init__(self, progress: ProgressFn | None, total: int):
        self.progress, self.total, self.done = progress, total, 0

    def __call__(self, n: int) -> None:
        self.done += n
        if self.progress:
            self.progress(self.done, self.total)
