"""`imnet64 submit` against the real local Slurm: job ids, the script sbatch got, afterok
chains, and one-line errors for what sbatch refuses.

Submissions are held (--sbatch-arg=--hold) where running them would only repeat
test_slurm_pipeline.py; a held job is a real, queued job all the same.
"""

from __future__ import annotations

import subprocess

import pytest
from slurm_cluster import IMNET64, Cluster, slurm_cluster_fixture  # noqa: F401

pytestmark = pytest.mark.slurm


def imnet64(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([str(IMNET64), "submit", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def job(cluster: Cluster, job_id: str) -> dict[str, str]:
    return cluster.job_records(job_id)[0]


def test_submit_returns_the_job_id_of_the_rendered_script(slurm_cluster: Cluster, tmp_path):
    done = imnet64("label", "--shards", "2", "--input", str(tmp_path), "--teacher", "offline",
                   "--log-dir", "logs", "--sbatch-arg=--hold", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert job_id.isdigit()
    try:
        record = job(slurm_cluster, job_id)
        assert record["JobName"] == "imnet64-label"
        assert record["ArrayTaskId"] == "0-1"
        assert record["StdOut"].startswith(f"{tmp_path}/logs/imnet64-label-"), record
        assert (tmp_path / "logs").is_dir()  # made for Slurm, which would not
        script = slurm_cluster.run("scontrol", "write", "batch_script", job_id, "-").stdout
        assert "export IMNET64_NUM_SHARDS=2" in script
        assert f"export IMNET64_INPUT={tmp_path}" in script
        assert "export IMNET64_TEACHER=offline" in script
    finally:
        slurm_cluster.run("scancel", job_id)


def test_pipeline_chains_the_three_jobs_with_afterok(slurm_cluster: Cluster, tmp_path):
    done = imnet64("pipeline", "--work", str(tmp_path), "--shards", "2", "--shard-tasks", "2",
                   "--nodes", "2", "--sbatch-arg=--hold", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.splitlines()]
    assert [stage for stage, _ in lines] == ["label", "shard", "train"]
    label, shard, train = (job_id for _, job_id in lines)
    try:
        assert job(slurm_cluster, label)["Dependency"] == "(null)"
        assert job(slurm_cluster, shard)["Dependency"] == f"afterok:{label}_*(unfulfilled)"
        assert job(slurm_cluster, train)["Dependency"] == f"afterok:{shard}(unfulfilled)"
        assert job(slurm_cluster, shard)["NumTasks"] == "2"
        assert job(slurm_cluster, train)["NumNodes"] in ("2", "2-2")  # pending: min-max
    finally:
        slurm_cluster.run("scancel", label, shard, train)


def test_unknown_partition_is_a_one_line_error(slurm_cluster: Cluster, tmp_path):
    done = imnet64("shard", "--partition", "nope", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: sbatch refused the shard job: ")
    assert "Invalid partition name specified" in done.stderr and "--partition nope" in done.stderr


def test_rejected_submission_is_a_one_line_error(slurm_cluster: Cluster, tmp_path):
    # the partition has 2 nodes (and the cluster enforces partition limits at submission)
    done = imnet64("train", "--nodes", "3", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "error: sbatch refused the train job: Node count specification invalid\n"


def test_pipeline_cancels_what_it_submitted_when_a_later_job_is_refused(
        slurm_cluster: Cluster, tmp_path):
    done = imnet64("pipeline", "--work", str(tmp_path), "--shards", "2", "--nodes", "3",
                   "--sbatch-arg=--hold", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: sbatch refused the train job: ")
    ids = done.stderr.rsplit("cancelled the jobs already submitted: ", 1)[1].strip().split(", ")
    assert len(ids) == 2
    for job_id in ids:
        states = {r["JobState"] for r in slurm_cluster.job_records(job_id)}
        assert states == {"CANCELLED"}, (job_id, states)
