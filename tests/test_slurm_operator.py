"""What an operator relies on, on the real local Slurm (two virtual nodes on this host):
`imnet64 doctor` inside jobs (a right and a wrong layout), the script of every
`imnet64 submit` saved beside its logs, and a requeued array task's log."""

from __future__ import annotations

import json
import platform
import re
import subprocess

import pytest
from slurm_cluster import IMNET64, REPO, Cluster, job_env, slurm_cluster_fixture  # noqa: F401

pytestmark = pytest.mark.slurm


def test_doctor_in_a_two_node_two_task_job_sees_size_2_on_two_nodes(slurm_cluster: Cluster,
                                                                     tmp_path):
    """Each rank's report: size 2, its own rank and node, both nodes; and Horovod, started
    on both ranks (--probe), joins one world of 2."""
    job = slurm_cluster.sbatch(
        "--nodes=2", "--ntasks-per-node=1", "--output=job.log", "--wrap",
        f"srun --mpi=pmix --output=doctor-%t.json --error=doctor-%t.err {IMNET64} doctor "
        "--json --probe --teacher offline", cwd=tmp_path, env=job_env())
    (record,) = slurm_cluster.wait(job, timeout=300)
    errors = {t: (tmp_path / f"doctor-{t}.err").read_text() for t in (0, 1)}
    assert record["JobState"] == "COMPLETED", (errors, (tmp_path / "job.log").read_text())
    reports = [json.loads((tmp_path / f"doctor-{t}.json").read_text()) for t in (0, 1)]
    for rank, report in enumerate(reports):
        launcher = report["launcher"]
        assert report["ok"] and report["problems"] == [], report["problems"]
        assert (launcher["kind"], launcher["pmi"]) == ("slurm", "pmix")
        assert (launcher["rank"], launcher["size"]) == (rank, 2)
        assert (launcher["local_rank"], launcher["local_size"]) == (0, 1)
        assert launcher["nodes"] == ["node1", "node2"]  # both hosts of the step
        assert launcher["node"] == f"node{rank + 1}" and launcher["host"] == platform.node()
        probe = report["horovod"]["probe"]
        assert (probe["rank"], probe["size"], probe["mpi_enabled"]) == (rank, 2, True)
        made_by = report["provenance"]
        assert (made_by["slurm_job_id"], made_by["slurm_step_id"]) == (job, "0")


def test_doctor_names_a_planted_mismatch(slurm_cluster: Cluster, tmp_path):
    """Two ranks on one node with one GPU granted (--gres=gpu:1), and the same two tasks
    started by a plain srun (no PMI): both exit 1 with a line naming the mismatch."""
    doctor = f"{IMNET64} doctor --quick --no-teacher"
    job = slurm_cluster.sbatch(
        "--nodes=1", "--ntasks-per-node=2", "--gres=gpu:1", "--output=job.log", "--wrap",
        f"srun --mpi=pmix --output=gres-%t.json --error=gres-%t.err {doctor} --json; "
        'echo "gres=$?"; '
        f"srun --error=nopmi-%t.err {doctor}; "
        'echo "nopmi=$?"',
        cwd=tmp_path, env=job_env())
    (record,) = slurm_cluster.wait(job, timeout=120)
    log = (tmp_path / "job.log").read_text()
    assert record["JobState"] == "COMPLETED", log
    assert re.search(r"^gres=1$", log, re.M) and re.search(r"^nopmi=1$", log, re.M), log
    for task in (0, 1):
        gres = (tmp_path / f"gres-{task}.err").read_text().splitlines()
        assert gres == ["problem: 2 ranks per node but 1 GPU(s) visible to each "
                        "(CUDA_VISIBLE_DEVICES=0): ranks would share a GPU (Horovod pins "
                        "local rank % GPUs) and run out of memory or hang in NCCL; ask one "
                        "GPU per rank (--gpus-per-node 2, or --gpus-per-task 1) or fewer "
                        "ranks per node"], gres
        nopmi = (tmp_path / f"nopmi-{task}.err").read_text()
        assert ("problem: srun started 2 tasks without PMI (SLURM_MPI_TYPE=none): "
                "Horovod's MPI cannot find the other ranks") in nopmi, nopmi
    reports = [json.loads((tmp_path / f"gres-{t}.json").read_text()) for t in (0, 1)]
    assert [r["launcher"]["rank"] for r in reports] == [0, 1]
    assert all(r["gpus"]["granted"] == 1 and not r["ok"] for r in reports)


def test_submit_saves_the_script_it_submitted_beside_the_logs(slurm_cluster: Cluster,
                                                              tmp_path):
    done = subprocess.run(
        [str(IMNET64), "submit", "train", "--log-dir", "logs", "--max-restarts", "3",
         "--sbatch-arg=--hold", "--gpus-per-node", "0"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    train = done.stdout.strip()
    done = subprocess.run([str(IMNET64), "submit", "shard", "--sbatch-arg=--hold"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    shard = done.stdout.strip()
    try:
        saved = tmp_path / "logs" / f"imnet64-train-{train}.sbatch"
        sbatch_got = slurm_cluster.run("scontrol", "write", "batch_script", train, "-").stdout
        assert saved.read_text() == sbatch_got
        assert "export IMNET64_MAX_RESTARTS=3\n" in sbatch_got
        # no --log-dir: the template's --output has no folder, so the submit folder
        assert (tmp_path / f"imnet64-shard-{shard}.sbatch").read_text() == slurm_cluster.run(
            "scontrol", "write", "batch_script", shard, "-").stdout
        assert not list(tmp_path.glob("logs/.*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    finally:
        slurm_cluster.run("scancel", train, shard)


def test_a_requeued_array_task_logs_both_runs_under_its_own_name(slurm_cluster: Cluster,
                                                                 tmp_path):
    """label.sh's log of a task Slurm requeues keeps the first run's lines (append) and each
    line names the task as A_T with its restart count (`true` stands in for imnet64)."""
    env = job_env(IMNET64_CMD="true", IMNET64_NUM_SHARDS="2", IMNET64_WORK=str(tmp_path))
    job = slurm_cluster.sbatch("--array=1", f"--output={tmp_path}/label-%A_%a.log",
                               str(REPO / "slurm" / "label.sh"), cwd=tmp_path, env=env)
    slurm_cluster.wait(job, timeout=60)
    slurm_cluster.run("scontrol", "requeue", f"{job}_1")
    log = tmp_path / f"label-{job}_1.log"

    def rerun_done():
        slurm_cluster.run("scontrol", "update", f"JobId={job}_1", "StartTime=now", check=False)
        (record,) = slurm_cluster.job_records(job)
        return record["JobState"] == "COMPLETED" and record.get("Restarts") == "1"

    slurm_cluster.wait_for("the requeued task to finish", rerun_done, timeout=120, every=1)
    lines = log.read_text().splitlines()
    assert [re.sub(r"^label\.sh: \S+ \S+ ", "", ln).split(" on ")[0] for ln in lines] == [
        f"task {job}_1 restart 0", f"task {job}_1 restart 1"], lines
