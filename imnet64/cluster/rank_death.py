"""status.json stays true when a rank dies without saying so (issue 24, item 10).

A rank killed by SIGKILL (or the OOM killer) cannot write how it ended: status.json would
say "running" forever. The process that started the ranks (`train --np N`) sees the death
and records it here: state "failed", which rank, how it died, and the exit code. A status
the ranks wrote themselves after this launch started (finished, failed with a reason,
preempted) is theirs and is left alone.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from imnet64 import atomic

STATUS = "status.json"  # imnet64.train.run_dir.STATUS (the trainer's file)


def how_it_ended(code: int) -> str:
    """'exit code 3', or 'signal SIGKILL' for a negative Popen return code."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def record_rank_death(run_dir: Path, started: float, who: str, code: int) -> bool:
    """If RUN_DIR/status.json still says "running" (or was never written by this launch),
    rewrite it as failed: `who` ended by `code`. True if it was rewritten."""
    path = Path(run_dir) / STATUS
    try:
        status = atomic.read_json(path) if path.exists() else {}
    except (OSError, ValueError):
        status = {}
    if not isinstance(status, dict):
        status = {}
    if status.get("state") not in (None, "running") and status.get("time", 0) >= started:
        return False  # the ranks said how it ended
    if not path.parent.is_dir():
        return False  # nothing was started in RUN_DIR (it was never created)
    exit_code = code if code > 0 else 128 - code
    atomic.write_json(path, {**status, "state": "failed", "time": time.time(),
                             "error": f"{who} ended by {how_it_ended(code)} without saying "
                                      "why (killed?); resume with the same command",
                             "exit_code": exit_code})
    return True
