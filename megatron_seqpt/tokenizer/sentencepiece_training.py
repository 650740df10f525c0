"""sentencepiece's training, in a child process of its own.

sentencepiece trains in C++, for minutes on a large sample, and Python runs no signal handler
until the call returns: Ctrl-C waited for the training to end. Nor can a thread left in that
call be stopped (the interpreter's exit aborts when such a thread calls back into Python). A
spawned child can be killed at once: the sentences stream to it in batches, in order (the same
model bytes as training in this process), and the serialized model comes back.
"""

from __future__ import annotations

import io
import multiprocessing
import signal
from itertools import islice
from multiprocessing.connection import Connection
from typing import Any, Iterable, Iterator

import sentencepiece as spm

from megatron_seqpt.errors import UserError
from megatron_seqpt.runtime.interrupts import WAIT_SECONDS

SENTENCES_PER_MESSAGE = 10_000


def train_in_child(sentences: Iterable[str], seed: int, **settings: Any) -> bytes:
    """The serialized model of ``SentencePieceTrainer.train(sentence_iterator=sentences,
    **settings)`` with sentencepiece's random generator seeded with ``seed``. Raises
    RuntimeError with sentencepiece's message where it fails."""
    if multiprocessing.current_process().daemon:
        # A daemonic process (a multiprocessing.Pool worker) may not start one: train here.
        return _trained(sentences, seed, settings)
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=_serve, args=(theirs, seed, settings),
                            name="sentencepiece-train", daemon=True)
    child.start()
    theirs.close()
    try:
        sentences = iter(sentences)
        while batch := list(islice(sentences, SENTENCES_PER_MESSAGE)):
            ours.send(batch)
        ours.send(None)
        while not ours.poll(WAIT_SECONDS):  # a pending Ctrl-C is handled between waits
            pass
        succeeded, value = ours.recv()
    except (BrokenPipeError, EOFError, ConnectionResetError):
        child.join()
        hint = ("; a SIGKILL is often the out-of-memory killer (the process holds the "
                "sample): lower --max-sentences" if child.exitcode == -signal.SIGKILL else "")
        raise UserError(f"sentencepiece's training process ended (exit code "
                        f"{child.exitcode}){hint}") from None
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        ours.close()
    if not succeeded:
        raise RuntimeError(value)
    return value


def _trained(sentences: Iterable[str], seed: int, settings: dict[str, Any]) -> bytes:
    spm.set_random_generator_seed(seed)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=model,
                                   **settings)
    return model.getvalue()


def _serve(connection: Connection, seed: int, settings: dict[str, Any]) -> None:
    """The child: train on the sentences the parent sends, send back the model or the error."""
    # Ctrl-C reaches the whole process group, and a scheduler's SIGTERM every process of the
    # job: the parent decides, and this process dies with it (``runtime/child_processes``).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sentences = _received(connection)
    try:
        outcome = (True, _trained(sentences, seed, settings))
    except RuntimeError as err:
        outcome = (False, str(err))
    for _ in sentences:  # the rest, where sentencepiece stopped reading: the parent sends on
        pass
    connection.send(outcome)


def _received(connection: Connection) -> Iterator[str]:
    while (batch := connection.recv()) is not None:
        yield from batch
