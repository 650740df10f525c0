"""Multi-stage recipes as a list of stages, each a normal run directory: pre-training runs,
encoder extractions and fine-tunings (scored with ``seqpt evaluate``). A stage whose run
directory is complete is skipped, so an interrupted recipe continues where it stopped (a
stage that was itself interrupted resumes from its checkpoint)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from megatron_seqpt.config import RunConfig
from megatron_seqpt.errors import UserError
from megatron_seqpt.runtime import distributed
from megatron_seqpt.runtime.log import log
from megatron_seqpt.training import checkpoint as ckpt

PRETRAIN, EXTRACT, FINETUNE = "pretrain", "extract", "finetune"


@dataclass(frozen=True)
class PretrainStage:
    name: str
    config: RunConfig
    kind: str = PRETRAIN


@dataclass(frozen=True)
class ExtractStage:
    """An MLM encoder made of a T5 stage's embeddings and encoder (new MLM head)."""

    name: str
    source: str
    kind: str = EXTRACT


@dataclass(frozen=True)
class FinetuneStage:
    """A task (a built-in task's name, or a task config file) fine-tuned from a stage's run
    (``init_step``: a checkpoint other than its latest); a probe freezes the embeddings and the
    encoder."""

    name: str
    init: str
    task: str
    seed: int
    probe: bool = False
    init_step: Optional[int] = None
    overrides: tuple[str, ...] = ()
    kind: str = FINETUNE


Stage = Union[PretrainStage, ExtractStage, FinetuneStage]
PROBE = ("freeze.embeddings.frozen=true", "freeze.encoder.frozen=true")


class StageFailed(UserError):
    """A stage's run diverged: the recipe cannot go on."""


def is_complete(stage: Stage, run_dir: Path) -> bool:
    if stage.kind == EXTRACT:
        return (run_dir / "checkpoints" / ckpt.LATEST).is_file()
    if stage.kind == FINETUNE:
        return (run_dir / "eval.json").is_file()
    result = run_dir / "result.json"
    if not result.is_file():
        return False
    done = json.loads(result.read_text())
    return done["status"] == "completed" and done["step"] >= stage.config.train.steps


def _checked(stage: Stage, status: str) -> str:
    if status == "diverged":
        raise StageFailed(f"{stage.name} diverged (see its metrics.jsonl); fix its settings, "
                          "remove its run directory and run the same command again")
    return status


def _pretrain(stage: PretrainStage, run_dir: Path) -> str:
    from megatron_seqpt.training.loop import Trainer

    ctx = distributed.initialize(stage.config.parallel, stage.config.model,
                                 stage.config.train.seed)
    try:
        result = Trainer(stage.config, run_dir, ctx).run()
    finally:
        distributed.shutdown()
    return _checked(stage, result.status)


def _extract(stage: ExtractStage, run_dir: Path, root: Path) -> str:
    from megatron_seqpt.recipes.convert import extract_encoder

    # The grid owns its stage directories: an interrupted extraction is redone in place.
    extract_encoder(root / stage.source, run_dir, "new", force=True)
    return "completed"


def task_settings(task: str) -> tuple[Optional[str], list[str]]:
    """(task config file or None, overrides) of a grid task: a task config file or the name of
    a built-in task."""
    if task.endswith((".yaml", ".yml")):
        return task, []
    return None, [f"task.builtin={task}"]


def finetune_settings(stage: FinetuneStage, root: Path) -> tuple[Optional[str], list[str]]:
    """(task config file or None, overrides) of a fine-tuning stage."""
    init = [f"init.from_run={root / stage.init}"]
    if stage.init_step is not None:
        init.append(f"init.from_step={stage.init_step}")
    task_file, task = task_settings(stage.task)
    return (task_file,
            [*init, *task, f"train.seed={stage.seed}", *(PROBE if stage.probe else ()),
             *stage.overrides])


def _finetune(stage: FinetuneStage, run_dir: Path, root: Path) -> str:
    from megatron_seqpt.tasks.evaluate import evaluate_run
    from megatron_seqpt.tasks.resolve import resolve_config
    from megatron_seqpt.tasks.workload import FinetuneWorkload
    from megatron_seqpt.training.loop import Trainer

    config, pretrained = resolve_config(*finetune_settings(stage, root))
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    try:
        result = Trainer(config, run_dir, ctx,
                         workload=FinetuneWorkload(config, pretrained)).run()
    finally:
        distributed.shutdown()
    if _checked(stage, result.status) == "completed":
        evaluate_run(run_dir)
    return result.status


# Effective FLOP/s of the default (small) grid's stages on 2 CPU cores, measured: 66 GFLOP/s
# for pre-training, 30-56 for fine-tuning (length-grouped batches, counting the examples'
# tokens, with start-up and scoring; seq2seq lowest, its generation uncounted), 52 over the
# grid. Turns FLOP weights into a first estimate before any stage has run.
CPU_FLOPS_PER_S = 5e10


@dataclass
class Progress:
    """Time per stage so far, and the time left estimated from the stages' expected cost
    (``weights``: relative cost of each stage, e.g. its FLOPs): at ``rate`` weight per second
    until a stage has run, then at the rate measured so far."""

    weights: dict[str, float]
    rate: Optional[float] = None
    started: float = field(default_factory=time.perf_counter)
    done_weight: float = 0.0
    spent: float = 0.0

    def record(self, name: str, seconds: float) -> None:
        self.done_weight += self.weights.get(name, 0.0)
        self.spent += seconds

    def left(self) -> Optional[float]:
        remaining = sum(self.weights.values()) - self.done_weight
        if self.done_weight > 0:
            return remaining * self.spent / self.done_weight
        return remaining / self.rate if self.rate else None


def run_stages(root: Path, stages: Sequence[Stage], weights: dict[str, float],
               on_done: Callable[[Stage, Path, float], None] = lambda *a: None,
               settle: Callable[[Stage], Stage] = lambda stage: stage,
               rate: Optional[float] = CPU_FLOPS_PER_S) -> bool:
    """Run the stages in order under ``root``, skipping complete ones; log an estimate before
    starting (``rate``: expected weight per second), time per stage and the time left.
    ``settle(stage)`` completes a stage that depends on earlier results just before it runs.
    Returns False when a stage stopped on the pre-emption signal (run again to continue it)."""
    complete = {stage.name for stage in stages if is_complete(stage, root / stage.name)}
    progress = Progress({name: cost for name, cost in weights.items() if name not in complete},
                        rate)
    estimate = progress.left()
    if estimate is not None and len(complete) < len(stages):
        log(f"{len(stages) - len(complete)} of {len(stages)} stages to run, estimated "
            f"{estimate / 60:.0f} min (refined after each stage)")
    for number, stage in enumerate(stages, 1):
        run_dir = root / stage.name
        head = f"stage {number}/{len(stages)} {stage.name}"
        if stage.name in complete:
            log(f"{head}: complete, skipped")
            continue
        log(f"{head}: starting")
        stage = settle(stage)
        started = time.perf_counter()
        if stage.kind == PRETRAIN:
            status = _pretrain(stage, run_dir)
        elif stage.kind == EXTRACT:
            status = _extract(stage, run_dir, root)
        else:
            status = _finetune(stage, run_dir, root)
        if status == "preempted":
            log(f"{head}: stopped on the pre-emption signal; run the same command again to "
                "continue")
            return False
        seconds = time.perf_counter() - started
        progress.record(stage.name, seconds)
        left = progress.left()
        log(f"{head}: done in {seconds:.0f} s; elapsed "
            f"{(time.perf_counter() - progress.started) / 60:.1f} min"
            + (f", about {left / 60:.0f} min left" if left is not None else ""))
        on_done(stage, run_dir, seconds)
    return True
