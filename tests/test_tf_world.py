"""The tf.distribute World (imnet64/cluster/tf_world.py): two real processes on localhost
joined by TF_CONFIG, one alone, and how a Slurm step becomes a cluster."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from imnet64.cluster.environment import Environment
from imnet64.cluster.tf_world import (
    init_tf_world,
    placement,
    placement_from_slurm,
    placement_from_tf_config,
    slurm_port_base,
)
from imnet64.errors import UserError

import numpy as np
import pytest
import tensorflow as tf

WORKER = Path(__file__).with_name("tf_world_worker.py")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tf_config(addresses: list[str], index: int) -> str:
    return json.dumps({"cluster": {"worker": addresses},
                       "task": {"type": "worker", "index": index}})


def test_two_processes_take_one_step_to_equal_weights(tmp_path: Path) -> None:
    addresses = [f"localhost:{p}" for p in _free_ports(2)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    procs = []
    for rank in range(2):
        env_rank = {**env, "TF_CONFIG": _tf_config(addresses, rank), "CUDA_VISIBLE_DEVICES": ""}
        procs.append(subprocess.Popen(
            [sys.executable, str(WORKER), str(tmp_path / f"rank{rank}.json")], env=env_rank,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        assert proc.returncode == 0, out[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))

    assert [r0["rank"], r1["rank"]] == [0, 1]
    assert r0["size"] == r1["size"] == 2
    assert [r0["local_rank"], r1["local_rank"]] == [0, 1]
    assert r0["local_size"] == r1["local_size"] == 2
    assert [r0["is_chief"], r1["is_chief"]] == [True, False]
    for r in (r0, r1):
        assert r["moved"] and r["grads_are_mean"] and r["grads_differ_from_local"], r
        assert r["stop_anywhere"] is True  # rank 1 alone asked to stop
        assert r["sum"] == [3.0, 3.0]
        assert r["object"] == {"from": 0, "text": "é" * 40}
        assert r["average"] == 0.5
        assert r["counter"] == 7 and r["flag"] is True  # rank 0's int64 and bool
    # rank 0's initial weights were broadcast, then both applied the same averaged gradients
    assert r0["start_sha256"] == r1["start_sha256"]
    assert r0["weights_sha256"] == r1["weights_sha256"]


def test_alone_without_tf_config_is_one_process_and_every_collective_a_no_op() -> None:
    world = init_tf_world({})
    assert (world.rank, world.size, world.local_rank, world.local_size) == (0, 1, 0, 1)
    assert world.is_chief and world.strategy is None
    v = tf.Variable([1.0, 2.0])
    world.broadcast_variables([v])
    world.average_variables([v], name="bn")
    np.testing.assert_array_equal(v.numpy(), [1.0, 2.0])
    np.testing.assert_array_equal(world.sum([1, 2], name="s"), [1.0, 2.0])
    assert world.broadcast_object({"a": 1}, name="o") == {"a": 1}
    assert bool(world.any_in_graph(tf.constant(True)))
    world.barrier()
    tape = tf.GradientTape()
    assert world.tape(tape) is tape


def test_tf_config_with_a_chief_puts_it_first() -> None:
    text = json.dumps({"cluster": {"worker": ["w0:1", "w1:2"], "chief": ["c:3"]},
                       "task": {"type": "worker", "index": 1}})
    where = placement_from_tf_config(text)
    assert where.addresses == ("c:3", "w0:1", "w1:2")
    assert (where.rank, where.size, where.local_rank, where.local_size) == (2, 3, 0, 1)


@pytest.mark.parametrize("text", ["{", '{"cluster": {"worker": ["a:1"]}}',
                                  '{"cluster": {"worker": ["a:1"]}, "task": '
                                  '{"type": "worker", "index": 3}}',
                                  '{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": '
                                  '{"type": "worker", "index": 0}}'])
def test_a_bad_tf_config_is_a_user_error(text: str) -> None:
    with pytest.raises(UserError, match="TF_CONFIG"):
        placement_from_tf_config(text)


SLURM_STEP = {"SLURM_JOB_ID": "4242", "SLURM_PROCID": "2", "SLURM_LOCALID": "0",
              "SLURM_STEP_NUM_TASKS": "3", "SLURM_STEP_NODELIST": "node[1-2]",
              "SLURM_STEP_TASKS_PER_NODE": "2,1", "SLURMD_NODENAME": "node2"}


@pytest.fixture
def fake_scontrol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `scontrol` on PATH that shows node<N> with NodeAddr=10.0.0.<N> (as
    scripts/slurm-local.sh's nodes, whose names are not host names)."""
    exe = tmp_path / "bin" / "scontrol"
    exe.parent.mkdir()
    exe.write_text('#!/bin/sh\necho "NodeName=$4 Arch=x86_64 NodeAddr=10.0.0.${4#node} '
                   'NodeHostName=vm"\n')
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{exe.parent}:{os.environ['PATH']}")
    return exe


def _slurm_env(monkeypatch: pytest.MonkeyPatch, resolvable: bool = True,
               **changes: str) -> Environment:
    # Node names resolve as host names (the usual cluster), unless told otherwise.
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host.startswith("node"):
            if resolvable:
                return []
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    # SlurmClusterResolver reads os.environ itself.
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for k, v in {**SLURM_STEP, **changes}.items():
        monkeypatch.setenv(k, v)
    return Environment.read()


def test_a_slurm_step_gets_one_port_per_rank_from_the_job_id(monkeypatch) -> None:
    env = _slurm_env(monkeypatch)
    where = placement(env)
    base = slurm_port_base("4242", 3)
    assert where.source == "slurm"
    assert where.addresses == (f"node1:{base}", f"node1:{base + 1}", f"node2:{base + 2}")
    assert (where.rank, where.size, where.local_rank, where.local_size) == (2, 3, 0, 1)
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # auto_set_gpu is off


def test_slurm_node_names_that_are_not_host_names_become_their_node_addr(
        monkeypatch, fake_scontrol) -> None:
    env = _slurm_env(monkeypatch, resolvable=False)
    where = placement(env)
    base = slurm_port_base("4242", 3)
    assert where.addresses == (f"10.0.0.1:{base}", f"10.0.0.1:{base + 1}",
                               f"10.0.0.2:{base + 2}")
    assert (where.rank, where.local_rank, where.local_size) == (2, 0, 1)


def test_slurm_ports_differ_between_jobs_and_stay_below_the_ephemeral_range() -> None:
    assert slurm_port_base("4242", 3) != slurm_port_base("4243", 3)
    assert slurm_port_base("4242", 3) + 3 <= slurm_port_base("4243", 3)
    for job in range(0, 5000, 7):
        base = slurm_port_base(str(job), 200)
        assert base >= 10240 and base + 200 <= 32768


def test_a_rank_the_resolver_puts_on_another_node_is_refused(monkeypatch) -> None:
    # Slurm lists node2 before node10; the resolver sorts them as text (node10 first).
    env = _slurm_env(monkeypatch, SLURM_STEP_NODELIST="node[2,10]", SLURM_PROCID="0",
                     SLURM_STEP_NUM_TASKS="2", SLURM_STEP_TASKS_PER_NODE="1(x2)",
                     SLURMD_NODENAME="node2")
    with pytest.raises(UserError, match="rank 0 on node2 .* places it on node10"):
        placement_from_slurm(env)
