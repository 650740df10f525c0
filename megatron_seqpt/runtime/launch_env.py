"""Where this process sits in the job: read from torchrun's or SLURM's environment, or alone.

torchrun sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT. Under ``srun`` each task gets
SLURM_PROCID/SLURM_LOCALID and the step's task count; each job step is a world of its own, its
rendezvous on the first host of the step's nodes (SLURM_STEP_NODELIST, else the job's) at a
port from the job and step ids. With neither, the process is a world of one.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from typing import Literal, Mapping

from megatron_seqpt.errors import UserError


class LaunchError(UserError):
    """The launcher's environment is inconsistent; the message says which variable."""


@dataclass(frozen=True)
class LaunchEnv:
    launcher: Literal["torchrun", "slurm", "single"]
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int

    @property
    def init_method(self) -> str:
        return f"tcp://{self.master_addr}:{self.master_port}"


def first_host(nodelist: str, variable: str = "SLURM_JOB_NODELIST") -> str:
    """First host of a SLURM hostlist: ``gpu[003-005,9],cpu1`` -> ``gpu003``,
    ``rack[1-2]-n[01-04]`` -> ``rack1-n01`` (each bracket gives its first value, as
    ``scontrol show hostnames`` lists them). ``variable`` names where it came from in errors."""
    nodelist = nodelist.strip()
    first = re.match(r"(?:[^,\[\]]|\[[\w,-]+\])*", nodelist).group(0)
    if not first or nodelist[len(first):len(first) + 1] not in ("", ","):
        raise LaunchError(f"{variable}='{nodelist}' is not a SLURM host list")
    return re.sub(r"\[([^\]]*)\]", lambda m: m.group(1).split(",")[0].split("-")[0], first)


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise LaunchError(f"environment variable {name}='{env[name]}' is not an integer") from None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's rank as its launcher set it (``detect``'s, 0 outside a launch), read
    without the rest of ``detect``'s work: for run-log lines before a process group exists."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return _int(env, "RANK")
    if "SLURM_PROCID" in env and ("SLURM_STEP_NUM_TASKS" in env or "SLURM_NTASKS" in env):
        return _int(env, "SLURM_PROCID")
    return 0


def detect(env: Mapping[str, str] | None = None) -> LaunchEnv:
    """Read the launch environment; torchrun's variables win over SLURM's."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
        local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else rank
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if v not in env]
        if missing and world > 1:
            raise LaunchError(f"RANK and WORLD_SIZE are set but {', '.join(missing)} is not; "
                              "launch with torchrun, or export MASTER_ADDR and MASTER_PORT")
        launch = LaunchEnv("torchrun", rank, world, local, env.get("MASTER_ADDR", "127.0.0.1"),
                           _int(env, "MASTER_PORT") if "MASTER_PORT" in env else _free_port())
    elif "SLURM_PROCID" in env and ("SLURM_STEP_NUM_TASKS" in env or "SLURM_NTASKS" in env):
        world_var = "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS"
        world = _int(env, world_var)
        nodelist = next((v for v in ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST",
                                     "SLURM_NODELIST") if v in env), None)
        if "MASTER_ADDR" in env:
            addr = env["MASTER_ADDR"]
        elif nodelist is not None:
            # The step's first node runs its task 0, and a step may use some of the job's nodes.
            addr = first_host(env[nodelist], nodelist)
        elif world == 1:
            addr = "127.0.0.1"
        else:
            raise LaunchError("under SLURM with several tasks but no SLURM_JOB_NODELIST or "
                              "MASTER_ADDR: export MASTER_ADDR to the first node's address")
        if "MASTER_PORT" in env:
            port = _int(env, "MASTER_PORT")
        elif "SLURM_JOB_ID" in env:
            # The same for every task of a step; different for the steps of one job running at
            # once (srun ... & srun ... &) and for jobs sharing a node.
            step = env.get("SLURM_STEP_ID", "0")
            step = int(step) if step.isdigit() else 0  # the batch script's own step: "batch"
            port = 15000 + (_int(env, "SLURM_JOB_ID") + 997 * step) % 20000
        else:
            port = _free_port()
        launch = LaunchEnv("slurm", _int(env, "SLURM_PROCID"), world,
                           _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0, addr, port)
    else:
        launch = LaunchEnv("single", 0, 1, 0, "127.0.0.1", _free_port())
    if not 0 <= launch.rank < launch.world_size:
        raise LaunchError(f"rank {launch.rank} is outside world size {launch.world_size} "
                          f"(read from the {launch.launcher} environment)")
    return launch
