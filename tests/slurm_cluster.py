"""The local Slurm cluster for the `slurm`-marked tests, and small helpers to drive it.

`slurm_cluster` (session fixture) starts scripts/slurm-local.sh's cluster when it is not
running yet and stops it at the end of the session, so `make test` needs nothing else.
A cluster that was already running (e.g. `scripts/slurm-local.sh start` by hand) is used
and left running. Use it in a test module by importing `slurm_cluster_fixture` (it registers as
`slurm_cluster`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SLURM_LOCAL = REPO / "scripts" / "slurm-local.sh"
IMNET64 = Path(sys.executable).with_name("imnet64")  # this venv's, whichever stack
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
            "BOOT_FAIL", "DEADLINE", "PREEMPTED", "SPECIAL_EXIT"}


@dataclass(frozen=True)
class Cluster:
    conf: Path

    def run(self, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster."""
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=120, **kw)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({done.returncode}): "
                                 f"{done.stderr.strip()}")
        return done

    def sbatch(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
        """Submit; returns the job id (without waiting)."""
        out = self.run("sbatch", "--parsable", *args, cwd=cwd,
                       env={**os.environ, **(env or {})}).stdout
        return out.strip().split(";")[0]

    def job_records(self, job_id: str) -> list[dict[str, str]]:
        """`scontrol show job -o` as dicts: one per job, or per array task."""
        out = self.run("scontrol", "show", "job", "-o", job_id).stdout
        records = []
        for line in out.splitlines():
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            if fields:
                records.append(fields)
        return records

    def wait(self, job_id: str, timeout: float = 300) -> list[dict[str, str]]:
        """Wait until the job (every task of an array) has ended; returns its records.

        Polls every 0.5 s: `sbatch --wait` polls with growing gaps (tens of seconds late)."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.job_records(job_id)
            if records and all(r["JobState"] in TERMINAL for r in records):
                return records
            if time.monotonic() > deadline:
                states = [(r.get("JobId"), r.get("ArrayTaskId"), r["JobState"]) for r in records]
                raise AssertionError(f"job {job_id} still running after {timeout} s: {states}")
            time.sleep(0.5)

    def wait_for(self, what: str, predicate, timeout: float = 180, every: float = 0.5):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(every)


def job_env(**settings: str) -> dict[str, str]:
    """Environment for a job running this checkout's imnet64 (sbatch exports it all)."""
    return {"IMNET64_CMD": str(IMNET64), "TF_CPP_MIN_LOG_LEVEL": "3", **settings}


@pytest.fixture(scope="session", name="slurm_cluster")
def slurm_cluster_fixture():
    state = Path(os.environ.get("IMNET64_SLURM_DIR", "/tmp/imnet64-slurm"))
    was_running = subprocess.run([SLURM_LOCAL, "status"]).returncode == 0
    if not was_running:
        started = subprocess.run([SLURM_LOCAL, "start"], capture_output=True, text=True,
                                 timeout=900)
        if started.returncode != 0:
            pytest.fail(f"scripts/slurm-local.sh start failed:\n{started.stderr}")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(state / "slurm.conf")
    try:
        yield Cluster(state / "slurm.conf")
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        if not was_running:
            subprocess.run([SLURM_LOCAL, "stop"], capture_output=True, timeout=120)
