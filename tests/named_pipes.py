"""Named pipes as inputs: one fed a corpus once (a tool that opened it again would wait for a
writer for ever), and one that stalls while an interrupt comes that Python notes while the main
thread is not blocked in a read (a reader must stop at once, ``runtime/interrupts.py``)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def fed_once(fifo: Path, data: bytes) -> Iterator[None]:
    """Makes ``fifo`` and writes ``data`` into it once while the block runs. Were it opened a
    second time, that open would wait for a writer for ever: after 120 s one comes and ends it
    with no lines, so the test fails on what it read instead of hanging."""
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes, args=(data,))
    writer.start()
    deadline = threading.Timer(120, lambda: open(fifo, "wb").close())
    deadline.start()
    try:
        yield
    finally:
        deadline.cancel()
        writer.join()


@contextlib.contextmanager
def stalled_pipe_and_interrupt(fifo: Path, data: bytes) -> Iterator[threading.Event]:
    """Makes ``fifo``, feeds it ``data`` and then holds it open with no more until the block
    ends (at most 10 s); 0.5 s into the block, a signal taken by another thread raises
    KeyboardInterrupt in the main thread when Python next runs bytecode there (a buffered read
    of a pipe also makes several reads without running the handler in between). Yields an event
    set once the stall ended: a reader that waited for the pipe's next data."""
    os.mkfifo(fifo)
    release, stall_ended = threading.Event(), threading.Event()

    def feed():
        with open(fifo, "wb") as writer:
            writer.write(data)
            writer.flush()
            release.wait(10)
            stall_ended.set()  # the pipe ends: a read waiting on it returns

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    threading.Thread(target=feed, daemon=True).start()
    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        threading.Timer(0.5, signal.raise_signal, [signal.SIGUSR1]).start()
        yield stall_ended
    finally:
        release.set()
        signal.signal(signal.SIGUSR1, previous)
