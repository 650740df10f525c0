"""A real one-node SLURM cluster (munge, slurmctld, slurmd) in a temporary directory.

Everything it starts runs in the foreground as a child of the test process, with its own munge
socket and key, so it touches nothing of the machine's own SLURM or munge; ``stop`` ends the
daemons by the process ids it holds. Needs root and Debian's ``slurmd slurmctld slurm-client
munge`` packages (``.ci/run`` installs them when absent).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "scancel")


def missing_reason() -> Optional[str]:
    """Why a cluster cannot start here, or None."""
    absent = [name for name in DAEMONS if shutil.which(name) is None
              and not Path("/usr/sbin", name).exists()]
    if absent:
        return (f"SLURM is not installed ({', '.join(absent)} missing): apt-get install slurmd "
                "slurmctld slurm-client munge (.ci/run does this)")
    if os.geteuid() != 0:
        return "starting slurmctld and slurmd needs root"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _executable(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class SlurmCluster:
    """Start with ``start()``; ``env`` is the environment that client commands need."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = socket.gethostname().split(".")[0]
        self.processes: list[subprocess.Popen] = []
        self.conf = root / "slurm.conf"
        self.socket = root / "munge.socket"
        # Jobs inherit it: the project's entry points (this interpreter's bin) on PATH.
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), "PATH": path}

    def start(self, timeout: float = 60.0) -> None:
        (self.root / "state").mkdir(parents=True)
        (self.root / "spool").mkdir()
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._spawn(["munged", "--foreground", "--force", f"--socket={self.socket}",
                     f"--key-file={key}", f"--pid-file={self.root / 'munged.pid'}",
                     f"--seed-file={self.root / 'munge.seed'}",
                     f"--log-file={self.root / 'munged.log'}"], "munged")
        self._wait(lambda: self.socket.exists(), timeout, "munged's socket")
        self.conf.write_text(self._config())
        self._spawn(["slurmctld", "-D", "-i"], "slurmctld")
        self._spawn(["slurmd", "-D"], "slurmd")
        self._wait(self._idle, timeout, f"node {self.host} to be idle in sinfo")

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.processes.clear()

    def run(self, *command: str, cwd: Optional[Path] = None, check: bool = True) -> str:
        """A client command (sbatch, scontrol, ...) against this cluster; its stdout."""
        result = subprocess.run(command, env=self.env, cwd=cwd, capture_output=True, text=True,
                                timeout=60)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}\n"
                               f"{self.logs()}")
        return result.stdout

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, Restarts, ExitCode, ...)."""
        fields: dict[str, str] = {}
        for item in self.run("scontrol", "show", "job", "--oneliner", job_id).split():
            name, _, value = item.partition("=")
            fields[name] = value
        return fields

    def logs(self) -> str:
        parts = []
        for name in ("ctld.log", "d.log", "munged.log"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name} (tail)\n" + "\n".join(
                    path.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(parts)

    def _spawn(self, command: list[str], name: str) -> None:
        log = open(self.root / f"{name}.out", "w")
        self.processes.append(subprocess.Popen([_executable(command[0]), *command[1:]],
                                               env=self.env, stdout=log,
                                               stderr=subprocess.STDOUT))
        log.close()

    def _idle(self) -> bool:
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[0]} exited with {process.returncode}\n"
                                   f"{self.logs()}")
        state = subprocess.run(["sinfo", "--noheader", "--format=%T"], env=self.env,
                               capture_output=True, text=True).stdout.strip()
        return state == "idle"

    @staticmethod
    def _wait(ready, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while not ready():
            if time.time() > deadline:
                raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.5)

    def _config(self) -> str:
        root = self.root
        return "\n".join([
            "ClusterName=seqpt-test", f"SlurmctldHost={self.host}",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={self.socket}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}", f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"StateSaveLocation={root / 'state'}", f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldLogFile={root / 'ctld.log'}", f"SlurmdLogFile={root / 'd.log'}",
            "SlurmUser=root", "ReturnToService=2", "MpiDefault=none",
            "JobAcctGatherType=jobacct_gather/none",
            f"NodeName={self.host} CPUs={os.cpu_count()} State=UNKNOWN",
            f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP", ""])
