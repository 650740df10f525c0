"""Launcher detection: torchrun's and SLURM's variables, and a plain single process."""

import os
import shutil
import subprocess

import pytest

from megatron_seqpt.runtime.launch_env import LaunchError, detect, first_host, process_rank


def test_single_process_without_launcher():
    env = detect({})
    assert (env.launcher, env.rank, env.world_size, env.local_rank) == ("single", 0, 1, 0)
    assert env.master_addr == "127.0.0.1" and env.master_port > 0


def test_torchrun_variables():
    env = detect({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.2",
                  "MASTER_PORT": "29500"})
    assert (env.launcher, env.rank, env.world_size, env.local_rank) == ("torchrun", 5, 8, 1)
    assert env.init_method == "tcp://10.0.0.2:29500"


def test_torchrun_wins_over_slurm():
    env = detect({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1",
                  "SLURM_PROCID": "0", "SLURM_NTASKS": "16"})
    assert env.launcher == "torchrun" and env.world_size == 2


def test_slurm_variables():
    env = detect({"SLURM_PROCID": "11", "SLURM_NTASKS": "16", "SLURM_LOCALID": "3",
                  "SLURM_JOB_NODELIST": "gpu[003-005,9],cpu1", "SLURM_JOB_ID": "4242"})
    assert (env.launcher, env.rank, env.world_size, env.local_rank) == ("slurm", 11, 16, 3)
    assert env.master_addr == "gpu003"
    assert env.master_port == 15000 + 4242
    step = detect({"SLURM_PROCID": "1", "SLURM_NTASKS": "16", "SLURM_STEP_NUM_TASKS": "4",
                   "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "n1", "MASTER_PORT": "7000"})
    assert step.world_size == 4 and step.master_addr == "n1" and step.master_port == 7000


def test_concurrent_slurm_steps_rendezvous_apart():
    # Two job steps of one allocation (srun ... & srun ... &) run at once, each its own world.
    job = {"SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "2", "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NODELIST": "n[1-4]"}
    first = detect({**job, "SLURM_PROCID": "0", "SLURM_STEP_ID": "0",
                    "SLURM_STEP_NODELIST": "n[1-2]"})
    second = detect({**job, "SLURM_PROCID": "1", "SLURM_STEP_ID": "1",
                     "SLURM_STEP_NODELIST": "n[3-4]"})
    assert first.master_port != second.master_port
    # Each step's rank 0 runs on the step's first node, which need not be the job's.
    assert (first.master_addr, second.master_addr) == ("n1", "n3")
    assert detect({**job, "SLURM_PROCID": "1", "SLURM_STEP_ID": "0"}) \
        .master_port == first.master_port
    with pytest.raises(LaunchError, match="SLURM_STEP_NODELIST='n\\[3-'"):
        detect({**job, "SLURM_PROCID": "0", "SLURM_STEP_NODELIST": "n[3-"})


@pytest.mark.parametrize("nodelist, host", [
    ("node1", "node1"),
    ("node[001-004]", "node001"),
    ("gpu[7,9-12]-ib", "gpu7-ib"),
    ("a1,b[2-3]", "a1"),
    ("rack[1-2]-n[01-04]", "rack1-n01"),
    ("rack[3,1]-n[2-4],x", "rack3-n2"),
])
def test_first_host(nodelist, host):
    assert first_host(nodelist) == host


@pytest.mark.parametrize("nodelist", ["", "node[1-2", "node]1[", ",a"])
def test_first_host_refuses_what_is_not_a_host_list(nodelist):
    with pytest.raises(LaunchError, match="not a SLURM host list"):
        first_host(nodelist)


@pytest.mark.skipif(shutil.which("scontrol") is None, reason="no SLURM client here")
def test_first_host_agrees_with_scontrol(tmp_path):
    # scontrol needs a cluster config to start at all; expanding host lists reads nothing of it.
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=x\nSlurmctldHost=localhost\nNodeName=localhost CPUs=1\n"
                    "PartitionName=p Nodes=localhost\n")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    for nodelist in ("rack[1-2]-n[01-04]", "gpu[7,9-12]", "rack[3,1]-n[2-4],x", "a1,b[2-3]"):
        hosts = subprocess.run(["scontrol", "show", "hostnames", nodelist], check=True,
                               capture_output=True, text=True, env=env).stdout.split()
        assert first_host(nodelist) == hosts[0]


def test_bad_launcher_values_are_named():
    with pytest.raises(LaunchError, match="RANK='x'"):
        detect({"RANK": "x", "WORLD_SIZE": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1"})
    with pytest.raises(LaunchError, match="rank 4 is outside world size 4"):
        detect({"RANK": "4", "WORLD_SIZE": "4", "MASTER_ADDR": "a", "MASTER_PORT": "1"})
    with pytest.raises(LaunchError, match="MASTER_ADDR"):
        detect({"RANK": "0", "WORLD_SIZE": "2"})


def _log_before_any_process_group() -> str:
    """(Runs in a rank process.) What a run-log line prints on this rank before the command
    starts its process group (the recipes' first lines, a preprocessing step)."""
    import contextlib
    import io

    import torch.distributed as dist

    from megatron_seqpt.runtime import distributed
    from megatron_seqpt.runtime.log import log

    if dist.is_initialized():  # kept from an earlier world of these rank processes
        distributed.close()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        log("hello")
    return printed.getvalue()


def test_run_log_lines_come_from_the_first_rank_before_a_process_group_exists(ranks):
    """Every rank of a launch printed them ("6 of 6 stages to run" once per rank)."""
    assert ranks.run(_log_before_any_process_group, 2) == ["[seqpt] hello\n", ""]


@pytest.mark.parametrize("env, rank", [
    ({}, 0), ({"RANK": "3", "WORLD_SIZE": "4"}, 3), ({"SLURM_PROCID": "2", "SLURM_NTASKS": "4"}, 2),
    ({"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "5", "SLURM_NTASKS": "8"}, 1)])
def test_the_rank_a_launcher_gave_is_detect_s(env, rank):
    full = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", **env} if env else env
    assert process_rank(full) == detect(full).rank == rank
