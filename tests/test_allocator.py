"""``seqpt`` runs on tcmalloc where the machine has it (runtime/allocator.py): it re-executes
itself with the library preloaded, in the same process, and ``SEQPT_ALLOCATOR=system`` keeps
glibc's malloc."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_seqpt.runtime import allocator

SEQPT = str(Path(sys.executable).with_name("seqpt"))
needs_tcmalloc = pytest.mark.skipif(
    allocator.find_tcmalloc() is None or not sys.platform.startswith("linux"),
    reason="no tcmalloc library here (Debian/Ubuntu: apt-get install libtcmalloc-minimal4)")


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("LD_PRELOAD", allocator.ENV_CHOICE)}
    return {**env, **extra}


def _allocator_line(env: dict[str, str]) -> str:
    out = subprocess.run([SEQPT, "env"], env=env, capture_output=True, text=True, check=True)
    return next(line for line in out.stdout.splitlines() if line.startswith("allocator:"))


@needs_tcmalloc
def test_seqpt_runs_on_tcmalloc_and_system_keeps_glibc():
    assert _allocator_line(_env()).startswith("allocator: tcmalloc (")
    assert _allocator_line(_env(SEQPT_ALLOCATOR="system")).startswith("allocator: system (")


@needs_tcmalloc
def test_the_reexecuted_process_keeps_its_id_and_arguments():
    code = ("import os, sys\n"
            "from megatron_seqpt.runtime import allocator\n"
            "print(os.getpid(), allocator.loaded(), sys.argv[1:], flush=True)\n"
            "allocator.reexec_with_tcmalloc()\n")
    out = subprocess.run([sys.executable, "-c", code, "a b", "c"], env=_env(),
                         capture_output=True, text=True, check=True)
    first, second = (line.split(" ", 2) for line in out.stdout.splitlines())
    assert first[1:] == ["system", "['a b', 'c']"]
    assert second[1:] == ["tcmalloc", "['a b', 'c']"]
    assert first[0] == second[0]  # the same process: launchers and signals still find it


def test_a_bad_choice_is_named_with_the_fix():
    out = subprocess.run([SEQPT, "env"], env=_env(SEQPT_ALLOCATOR="jemalloc"),
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert "SEQPT_ALLOCATOR='jemalloc': use one of tcmalloc, system" in out.stderr


def test_a_clean_environment_keeps_other_preloaded_libraries():
    env = {"LD_PRELOAD": "/opt/libfoo.so /usr/lib/libtcmalloc_minimal.so.4", "X": "1"}
    assert allocator.environment(env, "system") == {
        "LD_PRELOAD": "/opt/libfoo.so", "X": "1", allocator.ENV_CHOICE: "system"}
    assert "LD_PRELOAD" not in allocator.environment({"X": "1"}, "system")
