"""Children a run starts die with it.

megatron-core's checkpoint writer forks worker processes from the (multi-threaded) training
process. After a kill -9 of the run, such a forked worker was seen to hang for good on a lock
it inherited mid-use; a spawned child (a local rank, or the multiprocessing manager
megatron-core starts for write results where a save is asynchronous, which saves here are not:
training/checkpoint.py) served on forever, one more per killed run, holding memory, the run's
output pipes and its files. On Linux each such child asks the kernel to kill it when its
parent ends (``PR_SET_PDEATHSIG``); elsewhere this is a no-op.

A forked child asks in an at-fork hook (``install``). A spawned child is a new interpreter that
runs no hook, but it imports the parent's main module, and with it this package, before it
starts work: the package's import asks (``die_with_spawning_parent``). The kernel ties the
request to the thread that started the child; megatron-core starts these from the main thread.
Other children started with exec (subprocess, forkserver) are not affected.

The kernel signals such a child only after the parent's files are closed: a child that writes
to the parent in that moment (one still sending its set-up) gets a broken pipe and
prints a traceback. An interrupted command therefore ends its multiprocessing children itself,
before it exits (``stop_spawned_children``).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys

# Imported here, not in stop_spawned_children: it runs in signal handlers, and a signal that
# lands while a first ``import psutil`` elsewhere is half done (megatron-core's first checkpoint
# save imports it) would find the module half initialised.
import psutil

_PR_SET_PDEATHSIG = 1
# multiprocessing's spawn start method runs the child as ``python -c ... --multiprocessing-fork``.
_SPAWNED_CHILD_FLAG = "--multiprocessing-fork"
_installed = False
_forking_parent = 0


def _record_parent() -> None:
    global _forking_parent
    _forking_parent = os.getpid()


def _die_with(parent: int) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _die_with_forking_parent() -> None:
    _die_with(_forking_parent)


def install() -> None:
    """Register the request for every later fork of this process (once)."""
    global _installed
    if _installed or not sys.platform.startswith("linux"):
        return
    os.register_at_fork(before=_record_parent, after_in_child=_die_with_forking_parent)
    _installed = True


def die_with_spawning_parent() -> None:
    """In a child started by multiprocessing's spawn: be killed when the parent ends."""
    if sys.platform.startswith("linux") and _SPAWNED_CHILD_FLAG in sys.orig_argv:
        _die_with(os.getppid())


def stop_spawned_children(timeout: float = 10.0) -> None:
    """Kill this process's children started by multiprocessing's spawn method (local
    ranks, helpers), at once: the command is being aborted. Found
    through the OS rather than multiprocessing, which has not yet registered a child whose
    start the abort interrupted; one still starting would otherwise read its set-up from a
    closed pipe, or write its address to one, and print a traceback before it dies."""
    killed = set()
    for child in psutil.Process().children():
        try:
            if _SPAWNED_CHILD_FLAG in child.cmdline():
                child.kill()
                killed.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    for child in multiprocessing.active_children():  # reaps those multiprocessing knows
        # One started but not yet through exec still shows this process's command line.
        if isinstance(child, multiprocessing.context.SpawnProcess) and child.pid not in killed:
            child.kill()
            killed.add(child.pid)
        if child.pid in killed:
            child.join(timeout)
