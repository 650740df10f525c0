"""The settings a recipe's output directory was made with, kept beside its runs.

A recipe (``seqpt demo``, ``seqpt reproduce``) skips every stage whose run is complete, so that
the same command continues an interrupted one. Continued with other settings, it would skip the
runs made with the first ones and report them as made with the new; that is refused, naming
what differs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from megatron_seqpt.errors import UserError
from megatron_seqpt.files import publish_files
from megatron_seqpt.runtime import launch_env

SETTINGS_FILE = "settings.json"


def keep_or_check(output: Path, settings: Mapping[str, object]) -> None:
    """Refuse ``settings`` (each named as the user gives it, a flag or ``overrides``, with a
    JSON value) if ``output`` was made with others; keep them there if it holds none yet."""
    if output.exists() and not output.is_dir():
        raise UserError(f"--output-dir {output} is a file; name a new or an earlier output "
                        "directory")
    kept = output / SETTINGS_FILE
    settings = json.loads(json.dumps(settings))  # as read back: lists, not tuples
    if kept.is_file():
        before = json.loads(kept.read_text(encoding="utf-8"))
        differences = [f"{name} {_shown(before[name])} (now {_shown(settings.get(name))})"
                       for name in before if before[name] != settings.get(name)]
        if differences:
            raise UserError(f"{output} holds runs made with {'; '.join(differences)}: "
                            "continuing with these settings would report both as one; give a "
                            "new --output-dir, or the settings it was made with")
        return
    output.mkdir(parents=True, exist_ok=True)
    if launch_env.detect().rank == 0:
        publish_files({kept: (json.dumps(settings, indent=1) + "\n").encode()})


def _shown(value: object) -> str:
    if isinstance(value, list):
        return " ".join(map(str, value)) or "(none)"
    return str(value)
