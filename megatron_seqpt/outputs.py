"""Output directories that commands create: never taking over an existing one by accident,
and never left half-written (built under a temporary name beside it, then renamed)."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

from megatron_seqpt.errors import UserError


def check_new_output(output: Path, force: bool) -> None:
    """``output`` must be new or empty; ``force`` allows replacing what it holds."""
    if output.is_file():
        raise UserError(f"--output {output} is a file; name a new directory")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise UserError(f"--output {output} exists and is not empty; name a new directory "
                        "(or pass --force to replace what it holds)")


@contextlib.contextmanager
def staged_output(output: Path) -> Iterator[Path]:
    """A temporary directory beside ``output`` to write into; on success it replaces
    ``output`` (checked with ``check_new_output`` first), on any failure it is removed."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
