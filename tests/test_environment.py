"""imnet64.cluster.environment: the one reader of the process environment."""

from __future__ import annotations

import os
from pathlib import Path

from imnet64.cluster.environment import Environment, variable_set


def test_the_slurm_array_task_relative_to_its_first_id_is_the_shard():
    env = Environment.read({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1",
                            "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_PROCID": "0",
                            "SLURM_NTASKS": "1"})
    slot = env.shard_slot()
    assert (slot.index, slot.count, slot.source) == (2, 4, "slurm-array")
    assert env.shard_slot(1, 2).source == "options"
    assert list(env.shard_variables()) == ["SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN",
                                           "SLURM_ARRAY_TASK_COUNT", "SLURM_PROCID",
                                           "SLURM_NTASKS"]


def test_only_ranks_of_one_slurm_step_run_together():
    """shard-records' rank 0 waits for its siblings only when they run at the same time."""
    ranks = Environment.read({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"}).shard_slot()
    assert ranks.siblings_run_together
    alone = Environment.read({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}).shard_slot()
    array = Environment.read({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2",
                              "SLURM_PROCID": "0", "SLURM_NTASKS": "2"}).shard_slot()
    assert not alone.siblings_run_together and not array.siblings_run_together
    assert not Environment.read({}).shard_slot(0, 2).siblings_run_together


def test_ranks_and_defaults():
    assert Environment.read({"PMIX_RANK": "1"}).under_launcher
    assert Environment.read({"SLURM_NTASKS": "2", "SLURM_PROCID": "1"}).under_launcher
    assert not Environment.read({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}).under_launcher
    empty = Environment.read({})
    assert empty.slurm.shard_slot().source == "default"
    assert empty.home == Path.home() / ".cache" / "imnet64"
    assert (empty.teacher, empty.cuda_visible_devices, empty.started_at) == (None, None, None)
    assert Environment.read({"IMNET64_TEACHER": " offline "}).teacher == "offline"
    assert Environment.read({"CUDA_VISIBLE_DEVICES": ""}).cuda_visible_devices == ""


def test_the_tf_distribute_cluster_facts_are_typed():
    """What the tf engine reads (imnet64.cluster.tf_world): TF_CONFIG and the srun step."""
    env = Environment.read({"TF_CONFIG": ' {"cluster": {}} ', "SLURM_STEP_NUM_TASKS": "2",
                            "SLURMD_NODENAME": "node1"})
    assert env.tf_config == '{"cluster": {}}'
    assert (env.slurm.step_num_tasks, env.slurm.node_name) == (2, "node1")
    assert env.under_launcher  # whoever set TF_CONFIG started this process as a rank
    empty = Environment.read({"TF_CONFIG": " "})
    assert empty.tf_config is None and not empty.under_launcher
    assert (empty.slurm.step_num_tasks, empty.slurm.node_name) == (None, None)


def test_a_variable_is_set_for_a_block_only():
    name = "IMNET64_TEST_VARIABLE_SET"
    assert name not in os.environ
    with variable_set(name, "x"):
        assert Environment.read().variables[name] == "x"
    assert name not in os.environ
