"""Writing output files and directories so that a failure (a full or read-only disk, a kill)
never leaves a half-written file at a final name, nor temporaries that stay forever, and an
existing output directory is never taken over by accident.

Temporaries are named ``<final>.tmp-<host>-<pid><suffix>``: a later run on the same host removes
those of processes that no longer exist (and never those of a live process, or of another host
that shares the file system). Errors become one line naming the path and what the errno means.
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Iterator, Mapping

from megatron_seqpt.errors import UserError

_STALE = re.compile(r"\.tmp-(?:(?P<host>.+)-)?(?P<pid>\d+)(?:\.[^.]*)?$")
_ADVICE = {
    errno_codes.ENOSPC: "free space there or write elsewhere",
    errno_codes.EDQUOT: "free space within your quota or write elsewhere",
    errno_codes.EROFS: "write elsewhere",
    errno_codes.EACCES: "you may not write there; fix its permissions or write elsewhere",
    errno_codes.EPERM: "you may not write there; fix its permissions or write elsewhere",
}


class WriteError(UserError):
    """An output could not be written; the message names the path and the cause."""


def temporary_tag() -> str:
    """What this process's temporaries carry after the final name."""
    return f".tmp-{socket.gethostname()}-{os.getpid()}"


def temporary_path(final: str | Path) -> Path:
    return Path(f"{final}{temporary_tag()}")


def write_error(err: OSError, path: str | Path, action: str = "write") -> WriteError:
    name = errno_codes.errorcode.get(err.errno, "") if err.errno else ""
    cause = f"{err.strerror or err} ({name})" if name else str(err.strerror or err)
    advice = _ADVICE.get(err.errno or 0)
    return WriteError(f"cannot {action} {path}: {cause}" + (f"; {advice}" if advice else ""))


def remove_quietly(path: str | Path) -> None:
    """Remove a file or directory if it is there; a cleanup never raises over the error it
    cleans up after."""
    path = Path(path)
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(final: str | Path) -> list[Path]:
    """Remove the temporaries of ``final`` (any suffix) that processes of this host left when
    they died; returns what was removed."""
    final = Path(final)
    host = socket.gethostname()
    removed = []
    if not final.parent.is_dir():
        return removed
    for candidate in final.parent.glob(f"{final.name}.tmp-*"):
        match = _STALE.search(candidate.name[len(final.name):])
        if match is None or (match["host"] not in (None, host)):
            continue
        pid = int(match["pid"])
        if pid != os.getpid() and not _alive(pid):
            remove_quietly(candidate)
            removed.append(candidate)
    return removed


def publish_files(contents: Mapping[Path, bytes]) -> None:
    """Write every file under a temporary name first, then move them all to their final
    names: either all of them are new, or (on a write error) none changed."""
    temporaries = {final: temporary_path(final) for final in contents}
    try:
        for final, data in contents.items():
            try:
                temporaries[final].write_bytes(data)
            except OSError as err:
                raise write_error(err, final) from None
        for final, temporary in temporaries.items():
            os.replace(temporary, final)
    finally:
        for temporary in temporaries.values():
            remove_quietly(temporary)


def check_new_output(output: Path, force: bool) -> None:
    """``output`` must be new or empty; ``force`` allows replacing what it holds."""
    if output.is_file():
        raise UserError(f"--output {output} is a file; name a new directory")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise UserError(f"--output {output} exists and is not empty; name a new directory "
                        "(or pass --force to replace what it holds)")


def checked_output_file(output: Path, option: str = "--output") -> Path:
    """``output`` as a file this process can write, its directory made: checked before any
    long work, so that the work is never lost to an output it cannot write."""
    if output.is_dir():
        raise UserError(f"{option} {output} is a directory; name a file to write")
    blocking = next((p for p in output.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise UserError(f"{option} {output}: {blocking} is a file, not a directory")
    probe = temporary_path(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        probe.touch(exist_ok=False)
    except OSError as err:
        raise write_error(err, output) from None
    finally:
        remove_quietly(probe)
    return output


@contextlib.contextmanager
def staged_output(output: Path) -> Iterator[Path]:
    """A temporary directory beside ``output`` to write into; on success it replaces
    ``output`` (checked with ``check_new_output`` first), on any failure it is removed."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}{temporary_tag()}"
    remove_quietly(staging)
    staging.mkdir()
    try:
        yield staging
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    finally:
        remove_quietly(staging)
