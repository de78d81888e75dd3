"""The slurm/ templates on a real Slurm: two virtual nodes on this host (slurm-local.sh).

label.sh as a 2-task array (one task killed, then the array resubmitted), shard.sh with
2 tasks, train.sh with 2 ranks on 2 nodes, and train.sh getting its warning signal mid-run:
checkpoint, requeue, resume at the same step and LR, finish. Both training engines:
horovod (`srun --mpi=pmix`; skipped on a stack without Horovod) and tf (one srun task per
rank, the cluster from SlurmClusterResolver). Real photos, the real offline teacher, real
TensorFlow (and Horovod); the outputs are checked, not only the exit codes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from slurm_cluster import IMNET64, REPO, Cluster, job_env, slurm_cluster_fixture  # noqa: F401

pytestmark = pytest.mark.slurm

SLURM = REPO / "slurm"
IMAGES = 24
SHARDS = 2
SMALL_MODEL = "--widths 8,16,16 --repeats 1,1,1 --batch-size 4 --warmup-epochs 1"
ENGINES = [pytest.param("horovod", marks=pytest.mark.requires_horovod), "tf"]


@pytest.fixture(scope="module")
def work(tmp_path_factory, offline_teacher_dir) -> Path:
    """A work folder with 24 real photos in images/ (the templates' default layout)."""
    from imnet64.pipeline.sample_images import write_sample

    root = tmp_path_factory.mktemp("slurm-work")
    write_sample(root / "images", IMAGES)
    return root


def read_logs(folder: Path, pattern: str) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.glob(pattern))}


def test_array_and_two_node_pmix_step(slurm_cluster: Cluster, tmp_path):
    """The cluster itself: an array over both nodes through `sbatch --wait`, whose exit
    code reports a failing task, and a 2-node `srun --mpi=pmix` step."""
    done = slurm_cluster.run(
        "sbatch", "--wait", "--array=0-1", "--output=%a.out", "--wrap",
        'echo "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT"; exit "$SLURM_ARRAY_TASK_ID"',
        cwd=tmp_path, check=False)
    assert done.returncode == 1, done.stderr  # task 1 exited 1: sbatch --wait says so
    assert (tmp_path / "0.out").read_text().strip() == "0/2"
    assert (tmp_path / "1.out").read_text().strip() == "1/2"
    job = slurm_cluster.sbatch(
        "--nodes=2", "--ntasks-per-node=1", "--output=pmix.out", "--wrap",
        "srun --mpi=pmix bash -c 'echo rank $SLURM_PROCID/$SLURM_NTASKS on $SLURMD_NODENAME "
        "pmix=${PMIX_RANK:-none}'", cwd=tmp_path)
    (record,) = slurm_cluster.wait(job, timeout=60)
    assert record["JobState"] == "COMPLETED"
    lines = sorted((tmp_path / "pmix.out").read_text().splitlines())
    assert lines == ["rank 0/2 on node1 pmix=0", "rank 1/2 on node2 pmix=1"]


@pytest.fixture(scope="module")
def labeled(slurm_cluster: Cluster, work: Path) -> dict:
    """label.sh over 2 shards with task 1 cancelled mid-run, then the same array again."""
    env = job_env(IMNET64_WORK=str(work), IMNET64_TEACHER="offline")
    logs = work / "label-logs"
    logs.mkdir()
    args = (f"--array=0-{SHARDS - 1}", f"--output={logs}/%A_%a.log", str(SLURM / "label.sh"))
    first = slurm_cluster.sbatch(*args, cwd=work, env=env)
    # cancel task 1 once it has listed its inputs, seconds before it loads the teacher
    log1 = logs / f"{first}_1.log"
    slurm_cluster.wait_for(
        "label task 1 to start", lambda: log1.exists() and "12 of 24 inputs" in log1.read_text(),
        every=0.2)
    slurm_cluster.run("scancel", f"{first}_1")  # as if its node died
    first_states = {r["ArrayTaskId"]: r["JobState"] for r in slurm_cluster.wait(first)}
    parts = work / "labeled" / "labels"
    shard0 = sorted(parts.glob("part-00000-of-00002.*"))
    before = {p.name: p.stat().st_mtime_ns for p in shard0}
    status_between = json.loads(slurm_cluster.run(
        str(IMNET64), "label-status", str(work / "labeled"),
        "--num-shards", str(SHARDS), "--json", check=False).stdout)
    missing_only = ("submit", "label", "--label-dir", str(work / "labeled"), "--shards",
                    str(SHARDS), "--missing-only", "--dry-run")
    dry_between = slurm_cluster.run(str(IMNET64), *missing_only, check=False)
    second = slurm_cluster.sbatch(*args, cwd=work, env=env)
    second_states = {r["ArrayTaskId"]: r["JobState"] for r in slurm_cluster.wait(second)}
    dry_after = slurm_cluster.run(str(IMNET64), *missing_only, check=False)
    return {
        "first": first, "second": second, "logs": logs, "parts": parts,
        "first_states": first_states, "second_states": second_states,
        "status_between": status_between, "shard0_before": before,
        "dry_between": dry_between, "dry_after": dry_after,
    }


def test_label_array_resubmission_redoes_only_the_missing_shard(labeled, slurm_cluster):
    assert labeled["first_states"] == {"0": "COMPLETED", "1": "CANCELLED"}
    between = {s["index"]: s["state"] for s in labeled["status_between"]["shards"]}
    assert between[0] == "done" and between[1] in ("missing", "partial")
    assert labeled["second_states"] == {"0": "COMPLETED", "1": "COMPLETED"}
    logs = labeled["logs"]
    second = labeled["second"]
    rerun0 = (logs / f"{second}_0.log").read_text()
    rerun1 = (logs / f"{second}_1.log").read_text()
    assert "skipped" in rerun0 and " labeled, " not in rerun0  # done: not labeled again
    assert re.search(r"shard 1/2: 12 inputs, \d+ labeled, \d+ rejected", rerun1), rerun1
    # `imnet64 submit label --missing-only` would have submitted just shard 1, then nothing
    dry, dry_after = labeled["dry_between"], labeled["dry_after"]
    assert dry.returncode == 0 and "#SBATCH --array=1\n" in dry.stdout, dry.stderr
    assert "export IMNET64_NUM_SHARDS=2" in dry.stdout
    assert dry_after.returncode == 0 and dry_after.stdout == ""
    assert "all 2 shards" in dry_after.stderr and "nothing to submit" in dry_after.stderr
    # shard 0 was not rewritten
    after = {p.name: p.stat().st_mtime_ns for p in labeled["parts"].glob("part-00000-of-00002.*")}
    assert after == labeled["shard0_before"] and len(after) == 4  # with its .timing.json


def summary_files(parts: Path) -> list[Path]:
    return [p for p in sorted(parts.glob("*.json")) if not p.name.endswith(".timing.json")]


def test_label_counts_add_up(labeled, work):
    summaries = [json.loads(p.read_text()) for p in summary_files(labeled["parts"])]
    assert [s["shard_index"] for s in summaries] == [0, 1]
    assert sum(s["inputs"] for s in summaries) == IMAGES
    assert sum(s["labeled"] + s["rejected"] for s in summaries) == IMAGES
    assert {s["teacher"] for s in summaries} == {"offline"}
    assert {s["total_inputs"] for s in summaries} == {IMAGES}
    # provenance: each part names the array task that wrote it (shard 0: the first array,
    # shard 1: the resubmitted one), from its .timing.json
    from imnet64.formats.label_parts import read_summary

    made_by = [read_summary(p)["provenance"] for p in summary_files(labeled["parts"])]
    assert [(m["slurm_array_job_id"], m["slurm_array_task_id"]) for m in made_by] == [
        (labeled["first"], "0"), (labeled["second"], "1")]


@pytest.fixture(scope="module")
def dataset(slurm_cluster: Cluster, work: Path, labeled) -> dict:
    env = job_env(IMNET64_WORK=str(work),
                  IMNET64_SHARD_ARGS="--shard-size-mb 0.02 --val-fraction 0.25")
    job = slurm_cluster.sbatch("--ntasks=2", f"--output={work}/shard-%j.log",
                               str(SLURM / "shard.sh"), cwd=work, env=env)
    (record,) = slurm_cluster.wait(job)
    return {"state": record["JobState"], "dir": work / "dataset",
            "log": (work / f"shard-{job}.log").read_text()}


def test_shard_records_with_two_tasks(dataset, labeled):
    assert dataset["state"] == "COMPLETED", dataset["log"]
    manifest = json.loads((dataset["dir"] / "dataset.json").read_text())
    labeled_total = sum(json.loads(p.read_text())["labeled"]
                        for p in summary_files(labeled["parts"]))
    splits = manifest["splits"]
    assert splits["train"]["count"] + splits["val"]["count"] == labeled_total
    for split in splits.values():
        assert sum(s["examples"] for s in split["shards"]) == split["count"]
        for shard in split["shards"]:
            assert (dataset["dir"] / shard["file"]).stat().st_size == shard["bytes"]
    # both tasks wrote shards (srun --label prefixes each line with the task number)
    for rank in (0, 1):
        assert re.search(rf"^{rank}: wrote [1-9]\d* shard", dataset["log"], re.M), dataset["log"]


def train_job(cluster: Cluster, work: Path, name: str, epochs: int, engine: str,
              extra: str = "") -> str:
    env = job_env(IMNET64_WORK=str(work), IMNET64_RUN_DIR=str(work / name),
                  IMNET64_ENGINE=engine,
                  IMNET64_TRAIN_ARGS=f"--epochs {epochs} {SMALL_MODEL} "
                                     f"--dump-weights {work}/{name}-w{{rank}}.npz {extra}")
    return cluster.sbatch("--nodes=2", f"--job-name={name}", f"--output={work}/%x-%j.log",
                          str(SLURM / "train.sh"), cwd=work, env=env)


def epochs_done(log: str) -> list[int]:
    return [int(m) for m in re.findall(r"epoch (\d+)/\d+ done", log)]


def assert_same_weights(work: Path, name: str) -> None:
    w0, w1 = (np.load(work / f"{name}-w{r}.npz") for r in (0, 1))
    assert sorted(w0.files) == sorted(w1.files) and w0.files
    for key in w0.files:
        np.testing.assert_array_equal(w0[key], w1[key], err_msg=key)


@pytest.mark.parametrize("engine", ENGINES)
def test_train_two_ranks_on_two_nodes(slurm_cluster: Cluster, work: Path, dataset, engine):
    assert dataset["state"] == "COMPLETED"
    name = f"train2-{engine}"
    job = train_job(slurm_cluster, work, name, epochs=2, engine=engine)
    (record,) = slurm_cluster.wait(job)
    log = (work / f"{name}-{job}.log").read_text()
    assert record["JobState"] == "COMPLETED", log
    assert record["NodeList"] == "node[1-2]"
    assert f"2 ranks ({engine})" in log
    run = work / name
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    history = json.loads((run / "history.json").read_text())["epochs"]
    assert [e["epoch"] for e in history] == [1, 2]
    assert "training exited with code 0" in log
    # both ranks ran to the end, in step: equal final weights
    assert_same_weights(work, name)


@pytest.mark.parametrize("engine", ENGINES)
def test_train_requeue_on_warning_signal(slurm_cluster: Cluster, work: Path, dataset, engine):
    """USR1 to the batch shell (what --signal=B:USR1@120 does) mid-run: the ranks
    checkpoint and exit 75, the job requeues itself and the rerun resumes at the step and
    LR of the checkpoint and finishes the epochs."""
    from imnet64.train.schedule import Schedule

    assert dataset["state"] == "COMPLETED"
    epochs, name = 6, f"requeue-{engine}"
    job = train_job(slurm_cluster, work, name, epochs=epochs, engine=engine)
    run = work / name
    history = run / "history.json"
    slurm_cluster.wait_for(
        "the first epoch", lambda: history.exists() and json.loads(history.read_text())["epochs"],
        timeout=240, every=0.25)
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", job)
    (record,) = slurm_cluster.wait(job, timeout=300)
    log = (work / f"{name}-{job}.log").read_text()
    assert record["JobState"] == "COMPLETED", log
    assert record["Restarts"] == "1", log
    runs = re.findall(r"train\.sh: .* job \d+ restart (\d+) on (\S+):", log)
    assert runs == [("0", "node[1-2]"), ("1", "node[1-2]")], log
    assert "got SIGUSR1: asking the ranks to checkpoint" in log
    assert "stop requested (signal SIGUSR1)" in log
    assert f"requeueing job {job}" in log
    stopped = re.search(r"stop requested \(signal SIGUSR1\): checkpoint (\S+) at epoch (\d+) "
                        r"step (\d+)", log)
    resumed = re.search(r"resumed from (\S+): epoch (\d+), step (\d+), lr (\S+)", log)
    assert stopped and resumed, log
    assert resumed.groups()[:3] == stopped.groups(), log  # the checkpoint, epoch and step
    config = json.loads((run / "config.json").read_text())
    steps = config["steps_per_epoch"]
    global_step = (int(stopped.group(2)) - 1) * steps + int(stopped.group(3))
    assert float(resumed.group(4)) == pytest.approx(
        Schedule(**config["schedule"]).at_step(global_step, steps), rel=1e-5)
    first, second = log.split("restart 1 on", 1)
    done_first, done_second = epochs_done(first), epochs_done(second)
    assert done_first and done_second, log  # stopped mid-run, continued after the requeue
    assert done_first + done_second == list(range(1, epochs + 1)), log  # none lost or repeated
    rows = json.loads(history.read_text())["epochs"]
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    assert_same_weights(work, name)
