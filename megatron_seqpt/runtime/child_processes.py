"""Children a run forks die with it.

megatron-core's checkpoint writer forks worker processes from the (multi-threaded) training
process. After a kill -9 of the run during a save, such a worker was seen to hang for good on a
lock it inherited mid-use, holding memory, the run's output pipes and its files. On Linux each
forked child asks the kernel to kill it when its parent ends (``PR_SET_PDEATHSIG``); elsewhere
this is a no-op. Children started with exec (subprocess, spawn, forkserver) are not affected.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1
_installed = False
_forking_parent = 0


def _record_parent() -> None:
    global _forking_parent
    _forking_parent = os.getpid()


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != _forking_parent:  # the parent died before the request took effect
        os._exit(1)


def install() -> None:
    """Register the request for every later fork of this process (once)."""
    global _installed
    if _installed or not sys.platform.startswith("linux"):
        return
    os.register_at_fork(before=_record_parent, after_in_child=_die_with_parent)
    _installed = True
