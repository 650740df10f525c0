"""One writer per run directory: an exclusive lock on ``RUN_DIR/.lock``.

Two jobs writing one run directory overwrite each other's metrics, config and checkpoints. The
main rank takes an ``flock`` on the lock file for as long as the run trains; the kernel drops it
when the process ends in any way (kill -9 included), so a lock is never stale. The file keeps
the holder's host and pid for the message a second writer gets. Within one process the lock is
re-entrant: a run built again after an error (or the next stage of a recipe) takes it over.

A forked child (megatron-core's checkpoint writers fork) would share the lock and keep it
after a kill -9 of the run for as long as it lives (one was seen hung for good): children close
their copy at fork, which leaves the parent's lock in place.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from megatron_seqpt.errors import UserError

LOCK_FILE = ".lock"

# Locks this process holds: resolved run directory -> open descriptor.
_held: dict[Path, int] = {}


class RunDirectoryBusy(UserError):
    pass


def acquire(run_dir: Path) -> None:
    """Lock ``run_dir`` for this process, or raise RunDirectoryBusy naming the holder."""
    key = run_dir.resolve()
    if key in _held:
        return
    path = key / LOCK_FILE
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = path.read_text(encoding="utf-8").strip() or "another process"
        os.close(descriptor)
        raise RunDirectoryBusy(
            f"{run_dir} is in use by another run ({holder}); wait for it to end, or choose "
            "another --run-dir") from None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"pid {os.getpid()} on {socket.gethostname()}, since "
                         f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
    _held[key] = descriptor


def _close_in_child() -> None:
    """After fork, in the child: drop its references to the locks (not unlock: the lock
    belongs to the open file both share, which the parent keeps)."""
    for descriptor in _held.values():
        try:
            os.close(descriptor)
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


def release(run_dir: Path) -> None:
    descriptor = _held.pop(run_dir.resolve(), None)
    if descriptor is not None:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)
