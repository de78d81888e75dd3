"""imnet64.cluster.environment: the one reader of the process environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from imnet64.cluster.environment import Environment, ShardSlot, variable_set
from imnet64.errors import UserError

import pytest


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


@pytest.mark.parametrize(("env", "name"), [
    ({"SLURM_ARRAY_TASK_ID": "abc", "SLURM_ARRAY_TASK_COUNT": "4"}, "SLURM_ARRAY_TASK_ID"),
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "four"}, "SLURM_ARRAY_TASK_COUNT"),
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "-4"}, "SLURM_ARRAY_TASK_COUNT"),
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4",
      "SLURM_ARRAY_TASK_MIN": "1.5"}, "SLURM_ARRAY_TASK_MIN"),
    ({"SLURM_PROCID": "x", "SLURM_NTASKS": "2"}, "SLURM_PROCID"),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": ""}, "SLURM_NTASKS"),
    ({"SLURM_ARRAY_TASK_ID": "3"}, "SLURM_ARRAY_TASK_COUNT"),  # an id without the count
])
def test_a_malformed_shard_variable_is_an_error_naming_it(env, name):
    """Issue 24: `SLURM_ARRAY_TASK_ID=abc` made `label` label everything as shard 0 of 1."""
    environment = Environment.read(env)
    with pytest.raises(UserError, match=name) as refused:
        environment.shard_slot()
    assert "\n" not in str(refused.value)
    # options override Slurm's variables, as before
    assert environment.shard_slot(1, 2) == ShardSlot(1, 2, "options")


@pytest.mark.parametrize("name", ["HOROVOD_RANK", "OMPI_COMM_WORLD_SIZE", "SLURM_LOCALID",
                                  "PMI_RANK", "SLURM_NTASKS"])
def test_a_malformed_rank_variable_is_named(name):
    environment = Environment.read({name: "1e3"})
    assert environment.malformed() == {name: "1e3"}
    with pytest.raises(UserError, match=f"{name}='1e3' is not a whole number"):
        environment.check_rank_variables()
    Environment.read({name: " 3 "}).check_rank_variables()  # Slurm's numbers pass


def test_label_with_a_bad_array_id_labels_nothing(tmp_path):
    (tmp_path / "images").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI", "OMPI_"))}
    done = subprocess.run(
        [sys.executable, "-m", "imnet64_cli.main", "label", str(tmp_path / "images"),
         str(tmp_path / "out"), "--teacher", "offline"], capture_output=True, text=True,
        timeout=300, env={**env, "SLURM_ARRAY_TASK_ID": "abc", "SLURM_ARRAY_TASK_COUNT": "4"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: SLURM_ARRAY_TASK_ID='abc' is not a whole number")
    assert done.stderr.count("\n") == 1 and not (tmp_path / "out" / "labels").exists()


def test_train_with_a_bad_rank_variable_trains_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI", "OMPI_"))}
    done = subprocess.run(
        [sys.executable, "-m", "imnet64_cli.main", "train", str(tmp_path / "data"),
         str(tmp_path / "run")], capture_output=True, text=True, timeout=300,
        env={**env, "SLURM_PROCID": "one", "SLURM_NTASKS": "2"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: SLURM_PROCID='one' is not a whole number")
    assert not (tmp_path / "run").exists()
