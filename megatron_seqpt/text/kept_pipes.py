"""Inputs read twice, pipes among them (``seqpt train-tokenizer ... --input /dev/stdin``).

Tokenizer training reads its inputs twice: the languages' sizes decide each one's share of the
sample drawn in the second pass. A pipe (stdin, a FIFO fed by a decompressor) can be read only
once, so each is first copied to a temporary file (under TMPDIR) that both passes read, with the
pipe's own name in messages. The copies are removed as soon as the passes are done, and on
failure: while entered with pipes among the inputs, Ctrl-C and SIGTERM raise KeyboardInterrupt,
so the cleanup runs.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from tqdm import tqdm

from megatron_seqpt.files import write_error
from megatron_seqpt.runtime.interrupts import latched_interrupts, waited_in_short_waits
from megatron_seqpt.text.corpus import check_inputs

BLOCK_BYTES = 1 << 20


class KeptPipes:
    """A copy of each pipe among ``inputs`` while entered, until ``remove_copies``; ``copies``
    maps the pipe's path to its copy's."""

    def __init__(self, inputs: Sequence[str | Path], progress: bool = True):
        self.inputs = check_inputs(inputs)
        self.progress = progress
        self.copies: dict[Path, Path] = {}
        self._directory: tempfile.TemporaryDirectory | None = None
        self._interrupts: contextlib.ExitStack | None = None

    def __enter__(self) -> "KeptPipes":
        pipes = [path for path in dict.fromkeys(self.inputs) if not path.is_file()]
        if not pipes:
            return self
        self._interrupts = contextlib.ExitStack()
        try:
            self._interrupts.enter_context(latched_interrupts())
            self._directory = tempfile.TemporaryDirectory(prefix="seqpt-pipes-")
            for number, pipe in enumerate(pipes):
                copy = Path(self._directory.name) / f"input-{number}"
                _copy(pipe, copy, self.progress)
                self.copies[pipe] = copy
        except BaseException:
            self.__exit__()
            raise
        return self

    def remove_copies(self) -> None:
        """Done with them; Ctrl-C and SIGTERM stay taken until the exit."""
        self.copies = {}
        if self._directory is not None:
            directory, self._directory = self._directory, None
            directory.cleanup()

    def __exit__(self, *exc) -> None:
        """The copies removed, and Ctrl-C and SIGTERM given back (in the main thread)."""
        self.remove_copies()
        if self._interrupts is not None:
            interrupts, self._interrupts = self._interrupts, None
            interrupts.close()


def _copy(pipe: Path, copy: Path, progress: bool) -> None:
    """The pipe's bytes into ``copy``, read in a helper thread so that an interrupt is handled
    even while the pipe has no data (``waited_in_short_waits``)."""
    blocks = waited_in_short_waits(_blocks(pipe), f"read {pipe.name}")
    with tqdm(desc=f"reading {pipe}", unit="B", unit_scale=True, disable=not progress,
              dynamic_ncols=True, leave=False) as bar:
        try:
            with open(copy, "wb") as out:
                for block in blocks:
                    out.write(block)
                    bar.update(len(block))
        except OSError as err:
            if err.filename is not None:  # names its file; the command says so in one line
                raise
            # A full TMPDIR, mostly: one line naming the pipe and the copy.
            error = write_error(err, copy, f"keep {pipe} for the second pass in")
            raise type(error)(f"{error} (TMPDIR chooses the disk)") from None


def _blocks(pipe: Path) -> Iterator[bytes]:
    with open(pipe, "rb") as file:
        yield from iter(functools.partial(file.read, BLOCK_BYTES), b"")
