"""``seqpt reproduce``: run (or continue) the reproduction grid (``reproduce_grid.py``) on the
built-in corpus and tasks, or a user's corpus as config overrides, then write its report. A stage
whose run directory is complete is skipped, so an interrupted reproduction continues where it
stopped."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Optional, Sequence

from megatron_seqpt.errors import UserError
from megatron_seqpt.files import publish_files
from megatron_seqpt.hashing import file_sha256
from megatron_seqpt.recipes.kept_settings import keep_or_check
from megatron_seqpt.recipes.reproduce_grid import (
    DEFAULT_SCALE,
    DEFAULT_TASKS,
    SCALES,
    TASK_TEXT,
    equal_compute_step,
    grid,
    is_equal_compute,
    stage_weights,
)
from megatron_seqpt.recipes.reproduce_report import write_report
from megatron_seqpt.recipes.stages import PretrainStage, Stage, run_stages
from megatron_seqpt.recipes.task_text import write_task_text
from megatron_seqpt.runtime import launch_env
from megatron_seqpt.runtime.log import log


def run_reproduction(output: Path, scale_name: str = DEFAULT_SCALE, seeds: int = 3,
                     overrides: Sequence[str] = (), only: Sequence[str] = (),
                     tasks: Optional[dict[str, str]] = None) -> Optional[dict]:
    """Run (or continue) the grid under ``output`` and write its report; ``only``: run just
    these stages (those they need must be complete), no report. ``overrides`` apply to every
    pre-training stage (e.g. ``data.corpus=[...]``); ``tasks`` replace built-in tasks by kind."""
    if scale_name not in SCALES:
        raise UserError(f"unknown --scale {scale_name!r}; choose one of {', '.join(SCALES)}")
    if seeds < 1:
        raise UserError("--seeds must be at least 1")
    scale = SCALES[scale_name]
    output = Path(output)
    tasks = {**DEFAULT_TASKS, **(tasks or {})}
    keep_or_check(output, _grid_settings(scale_name, tasks, overrides))
    stages = grid(output, scale, seeds, overrides, tasks)
    corpora = {path for stage in stages if isinstance(stage, PretrainStage)
               for path in stage.config.data.corpus}
    if str(output / TASK_TEXT) not in corpora:
        log("pre-training on the data.corpus given (the tasks' text is not added)")
    else:
        text = write_task_text(tasks, output / TASK_TEXT)
        log(f"pre-training on the built-in corpus and the tasks' text: {text.texts} training "
            f"texts in {text.documents} documents ({text.held_out} left out: a validation or "
            f"test split holds them), {text.path}")
    if only:
        known = {s.name: s for s in stages}
        unknown = [name for name in only if name not in known]
        if unknown:
            raise UserError(f"unknown stage {unknown[0]!r}; seqpt reproduce --list names them")
        stages = [known[name] for name in only]
    log(f"reproduction at scale {scale_name}: {len(stages)} stages, {seeds} seed(s), "
        f"output {output.resolve()}")
    timings_path = output / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}

    def done(stage: Stage, run_dir: Path, seconds: float) -> None:
        timings[stage.name] = seconds
        if launch_env.detect().rank == 0:  # the ranks of a launch time the same stages
            publish_files({timings_path: (json.dumps(timings, indent=1) + "\n").encode()})

    def settle(stage: Stage) -> Stage:
        if is_equal_compute(stage):
            return dataclasses.replace(stage, init_step=equal_compute_step(output))
        return stage

    started = time.perf_counter()
    finished = run_stages(output, stages, stage_weights(stages, scale), done, settle)
    if only or not finished or launch_env.detect().rank != 0:
        return None
    return write_report(output, scale_name, scale, seeds, timings,
                        time.perf_counter() - started, tasks,
                        [stage.name for stage in stages])


def _grid_settings(scale_name: str, tasks: dict[str, str], overrides: Sequence[str]) -> dict:
    """What decides the grid's runs (``kept_settings``): the scale, each task (a task config
    file with the hash of what it holds) and the overrides; not the seeds, whose runs are
    each their own."""
    def identity(task: str) -> str:
        # A task file by what it holds: the same file named from another directory is the same.
        path = Path(task)
        if task.endswith((".yaml", ".yml")) and path.is_file():
            return f"{path.name} (sha256 {file_sha256(path)[:12]})"
        return task

    return {"--scale": scale_name,
            **{f"--{kind}-task": identity(task) for kind, task in sorted(tasks.items())},
            "overrides": list(overrides)}
