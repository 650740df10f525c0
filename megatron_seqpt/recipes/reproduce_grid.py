"""The grid of runs behind the paper's findings (``seqpt reproduce``): its scales, rows and
stages, each stage a normal run directory.

Pre-training rows: the MLM encoder; T5 from scratch, with a smaller decoder, with the encoder
MLM loss; T5 warm-started from the MLM encoder with the encoder frozen throughout, unfrozen at
a fraction of training, and unfrozen with the shared embeddings trainable all along; the
encoders extracted from the three seq2seq-first T5 variants, and the first of them after
continued MLM training. Every encoder row is fine-tuned and probed on the classification and
the tagging task, every seq2seq row fine-tuned on the seq2seq task, each with N seeds; the
from-scratch T5 is also scored at the compute the warm-started one spent (equal compute).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from megatron_seqpt.config import RunConfig, load_run_config
from megatron_seqpt.recipes import accounting
from megatron_seqpt.recipes.curves import valid_curve
from megatron_seqpt.recipes.stages import (
    ExtractStage,
    FinetuneStage,
    PretrainStage,
    Stage,
)
from megatron_seqpt.text.corpus import default_corpus_path


@dataclass(frozen=True)
class FinetuneSchedule:
    """How long (epochs, or steps when epochs is None) and at which LR a task kind is
    fine-tuned, and the LR of its probe."""

    epochs: Optional[float]
    steps: Optional[int]
    lr: float
    probe_lr: float


@dataclass(frozen=True)
class Scale:
    """Model and training sizes of one reproduction scale."""

    hidden: int
    layers: int
    heads: int
    small_decoder_layers: int
    seq_length: int
    decoder_seq_length: int
    vocab_size: int
    encoder_steps: int
    t5_steps: int
    continued_mlm_steps: int
    global_batch: int
    micro_batch: int
    lr: float
    evaluations: int
    # Classification, and any task kind without a schedule of its own below.
    finetune: FinetuneSchedule
    # The tagging task's own schedule where it differs: its examples are short and its tags
    # many, so it takes more passes at little cost.
    tagging: Optional[FinetuneSchedule] = None
    # The seq2seq task's: one stage costs several encoder ones (generation included).
    seq2seq: Optional[FinetuneSchedule] = None
    precision: str = "auto"
    restore_max_new_tokens: int = 48

    def schedule(self, kind: str) -> FinetuneSchedule:
        own = {"tagging": self.tagging, "seq2seq": self.seq2seq}.get(kind)
        return own or self.finetune


# The default: about an hour for the whole grid with 3 seeds on 2 CPU cores (see the README).
# A small model trained long (each T5 sees the corpus about 30 times) rather than a larger one
# trained briefly: at hidden 256 and 300 steps the MLM encoder had barely left unigram
# statistics and no encoder difference exceeded the seed noise.
_SMALL = Scale(hidden=128, layers=2, heads=4, small_decoder_layers=1, seq_length=128,
               decoder_seq_length=40, vocab_size=4000, encoder_steps=1500, t5_steps=1500,
               continued_mlm_steps=300, global_batch=16, micro_batch=16, lr=2e-3,
               evaluations=10, finetune=FinetuneSchedule(4.0, None, 1e-3, 1e-2),
               tagging=FinetuneSchedule(6.0, None, 1e-3, 1e-2),
               seq2seq=FinetuneSchedule(3.0, None, 2e-3, 2e-3))

SCALES = {
    # Seconds per stage: the grid end to end in CI; numbers mean nothing.
    "micro": Scale(hidden=32, layers=1, heads=2, small_decoder_layers=1, seq_length=32,
                   decoder_seq_length=16, vocab_size=2000, encoder_steps=6, t5_steps=6,
                   continued_mlm_steps=2, global_batch=8, micro_batch=8, lr=1e-3,
                   evaluations=2, finetune=FinetuneSchedule(None, 3, 1e-3, 1e-3),
                   restore_max_new_tokens=8),
    # Minutes on a laptop: the default's model with a fifth of its training; every stage
    # really trains, findings are not expected to show.
    "tiny": dataclasses.replace(
        _SMALL, encoder_steps=300, t5_steps=300, continued_mlm_steps=60, evaluations=6,
        finetune=FinetuneSchedule(2.0, None, 1e-3, 1e-2),
        tagging=FinetuneSchedule(3.0, None, 1e-3, 1e-2),
        seq2seq=FinetuneSchedule(1.0, None, 2e-3, 2e-3)),
    "small": _SMALL,
    # A GPU cluster: BERT-base / T5-base sizes (examples/configs/base_*.yaml); the decoder
    # holds span corruption's longest target at 512 input pieces (153).
    "base": Scale(hidden=768, layers=12, heads=12, small_decoder_layers=4, seq_length=512,
                  decoder_seq_length=160, vocab_size=64000, encoder_steps=250_000,
                  t5_steps=250_000, continued_mlm_steps=25_000, global_batch=256,
                  micro_batch=16, lr=1e-4, evaluations=50,
                  finetune=FinetuneSchedule(5.0, None, 5e-5, 1e-3)),
}
DEFAULT_SCALE = "small"
# The tasks' training text, written by the reproduction and pre-trained on with the built-in
# corpus (recipes/task_text.py).
TASK_TEXT = Path("corpus") / "task_text.jsonl"
UNFREEZE_FRACTION = 0.5
ENCODER_MLM_WEIGHT = 0.5
# Task kinds the rows are scored on, and the built-in task (or task config file) of each.
ENCODER_TASKS = ("classification", "tagging")
SEQ2SEQ_TASK = "seq2seq"
# Tagging: part-of-speech tags (human-annotated, 14 tags), where the representation of each
# word matters; punct's tags are 82% "O" and no probe leaves that majority.
DEFAULT_TASKS = {"classification": "topic", "tagging": "pos_tr", "seq2seq": "restore"}

# Row -> what it is (the report's wording).
PRETRAIN_ROWS = {
    "mlm": "MLM encoder",
    "t5_scratch": "T5 from scratch",
    "t5_small_decoder": "T5 from scratch, smaller decoder",
    "t5_encoder_mlm": "T5 from scratch, with the encoder MLM loss",
    "t5_warm_frozen": "T5 warm-started, encoder frozen throughout",
    "t5_warm_unfreeze": "T5 warm-started, encoder unfrozen at the fraction",
    "t5_warm_unfreeze_emb": "T5 warm-started, encoder unfrozen at the fraction, embeddings "
                            "trainable",
    "x_t5_scratch_mlm": "encoder extracted from T5 from scratch, then continued MLM",
}
EXTRACTED = {"x_t5_scratch": "t5_scratch", "x_t5_small_decoder": "t5_small_decoder",
             "x_t5_encoder_mlm": "t5_encoder_mlm"}
ENCODER_ROWS = ("mlm", *EXTRACTED, "x_t5_scratch_mlm")
SEQ2SEQ_ROWS = ("t5_scratch", "t5_small_decoder", "t5_encoder_mlm", "t5_warm_frozen",
                "t5_warm_unfreeze", "t5_warm_unfreeze_emb")
# The from-scratch T5 at the checkpoint where it had spent what the warm-started one did.
EQUAL_COMPUTE_ROW = "t5_scratch@equal_compute"


def _shape(scale: Scale) -> list[str]:
    s = scale
    return [f"model.hidden_size={s.hidden}", f"model.max_position_embeddings={s.seq_length}",
            f"model.encoder.num_layers={s.layers}", f"model.encoder.ffn_hidden_size={4 * s.hidden}",
            f"model.encoder.num_attention_heads={s.heads}",
            f"model.decoder.num_layers={s.layers}", f"model.decoder.ffn_hidden_size={4 * s.hidden}",
            f"model.decoder.num_attention_heads={s.heads}",
            f"data.seq_length={s.seq_length}", f"data.decoder_seq_length={s.decoder_seq_length}",
            f"data.vocab_size={s.vocab_size}", f"train.global_batch_size={s.global_batch}",
            f"train.micro_batch_size={s.micro_batch}", f"train.precision={s.precision}",
            f"optim.lr={s.lr}", "checkpoint.keep_last=0", "logging.log_interval=25"]


def _steps(steps: int, evaluations: int) -> list[str]:
    interval = max(1, steps // evaluations)
    return [f"train.steps={steps}", f"train.eval_interval={interval}",
            f"checkpoint.save_interval={interval}",
            f"optim.warmup_steps={max(1, steps // 10)}"]


def _unfreeze(groups: Sequence[str], fraction: Optional[float], steps: int) -> list[str]:
    out = []
    for group in groups:
        out.append(f"freeze.{group}.frozen=true")
        if fraction is not None:
            out += [f"freeze.{group}.unfreeze_at_fraction={fraction}",
                    f"freeze.{group}.warmup_steps={max(1, steps // 10)}"]
    return out


def pretrain_configs(root: Path, scale: Scale, overrides: Sequence[str]
                     ) -> dict[str, RunConfig]:
    """The run config of every pre-training row: on the built-in corpus and the tasks' text
    (``TASK_TEXT``, see task_text.py) unless the overrides give a corpus."""
    corpus = f"data.corpus=[{default_corpus_path()},{root / TASK_TEXT}]"
    common = [*_shape(scale), f"data.cache_dir={root / 'data'}", corpus]
    t5 = ["model.kind=t5", *_steps(scale.t5_steps, scale.evaluations)]
    warm = [*t5, f"init.from_encoder={root / 'pretrain' / 'mlm'}"]
    rows = {
        "mlm": ["model.kind=encoder", *_steps(scale.encoder_steps, scale.evaluations)],
        "t5_scratch": t5,
        "t5_small_decoder": [*t5, f"model.decoder.num_layers={scale.small_decoder_layers}"],
        "t5_encoder_mlm": [*t5, f"model.encoder_mlm_weight={ENCODER_MLM_WEIGHT}"],
        "t5_warm_frozen": [*warm, *_unfreeze(("embeddings", "encoder"), None, scale.t5_steps)],
        "t5_warm_unfreeze": [*warm, *_unfreeze(("embeddings", "encoder"), UNFREEZE_FRACTION,
                                               scale.t5_steps)],
        "t5_warm_unfreeze_emb": [*warm, *_unfreeze(("encoder",), UNFREEZE_FRACTION,
                                                   scale.t5_steps)],
        "x_t5_scratch_mlm": ["model.kind=encoder",
                             f"checkpoint.load={root / 'extract' / 'x_t5_scratch'}",
                             *_steps(scale.continued_mlm_steps, max(1, scale.evaluations // 2))],
    }
    return {name: load_run_config(None, [*common, *extra, *overrides])
            for name, extra in rows.items()}


def stage_dir(row: str) -> str:
    return f"extract/{row}" if row in EXTRACTED else f"pretrain/{row}"


def finetune_stage(row: str, kind: str, probe: bool, seed: int, scale: Scale,
                   tasks: dict[str, str], init_step: Optional[int] = None) -> FinetuneStage:
    schedule = scale.schedule(kind)
    length = [f"task.epochs={schedule.epochs}"] if schedule.epochs else \
        ["task.epochs=null", f"train.steps={schedule.steps}"]
    extra = [*length, f"optim.lr={schedule.probe_lr if probe else schedule.lr}",
             "optim.warmup_steps=10", "logging.log_interval=50", "logging.tensorboard=false",
             "checkpoint.keep_last=1"]
    if kind == SEQ2SEQ_TASK:
        extra.append(f"task.generation.max_new_tokens={scale.restore_max_new_tokens}")
    mode = "probe" if probe else "full"
    name = f"finetune/{row}/{kind}_{mode}/seed{seed}"
    source = "t5_scratch" if row == EQUAL_COMPUTE_ROW else row
    return FinetuneStage(name, stage_dir(source), tasks[kind], seed, probe, init_step,
                         tuple(extra))


def grid(root: Path, scale: Scale, seeds: int, overrides: Sequence[str],
         tasks: Optional[dict[str, str]] = None) -> list[Stage]:
    """Every stage, each after what it needs (the equal-compute fine-tunings last).
    ``tasks``: task kind -> built-in task name or task config file (default DEFAULT_TASKS)."""
    tasks = {**DEFAULT_TASKS, **(tasks or {})}
    configs = pretrain_configs(root, scale, overrides)
    stages: list[Stage] = [PretrainStage(f"pretrain/{row}", configs[row]) for row in
                           ("mlm", "t5_scratch", "t5_small_decoder", "t5_encoder_mlm",
                            "t5_warm_frozen", "t5_warm_unfreeze", "t5_warm_unfreeze_emb")]
    stages += [ExtractStage(stage_dir(row), stage_dir(source))
               for row, source in EXTRACTED.items()]
    stages.append(PretrainStage("pretrain/x_t5_scratch_mlm", configs["x_t5_scratch_mlm"]))
    for seed in range(1, seeds + 1):
        for row in ENCODER_ROWS:
            for kind in ENCODER_TASKS:
                for probe in (False, True):
                    stages.append(finetune_stage(row, kind, probe, seed, scale, tasks))
        for row in SEQ2SEQ_ROWS:
            stages.append(finetune_stage(row, SEQ2SEQ_TASK, False, seed, scale, tasks))
    # Their checkpoint step is known once both T5 runs are done (see equal_compute_step).
    stages += [finetune_stage(EQUAL_COMPUTE_ROW, SEQ2SEQ_TASK, False, seed, scale, tasks)
               for seed in range(1, seeds + 1)]
    return stages


def is_equal_compute(stage: Stage) -> bool:
    return stage.name.startswith(f"finetune/{EQUAL_COMPUTE_ROW}/")


def equal_compute_step(root: Path) -> int:
    """The from-scratch T5's checkpoint step whose executed FLOPs are nearest to what the
    warm-started T5 spent in all."""
    warm = valid_curve(root / "pretrain" / "t5_warm_unfreeze")
    scratch = valid_curve(root / "pretrain" / "t5_scratch")
    spent = warm[-1][1]
    saved = {int(p.name.split("_")[1]) for p in
             (root / "pretrain" / "t5_scratch" / "checkpoints").glob("step_*")
             if not p.name.endswith(".partial")}
    candidates = [(abs(flops - spent), step) for step, flops, _ in scratch if step in saved]
    return min(candidates)[1]


# Training tokens per fine-tuning example (source and target for seq2seq), as the built-in
# tasks' runs record them; a user's task only shifts the estimate, not the grid.
TOKENS_PER_EXAMPLE = {"classification": 46, "tagging": 44, "seq2seq": 60}
# Training examples per epoch of the built-in tasks (topic, pos_tr, restore).
EXAMPLES_PER_EPOCH = {"classification": 1997, "tagging": 1558, "seq2seq": 2652}


def stage_weights(stages: Sequence[Stage], scale: Scale) -> dict[str, float]:
    """Expected cost of each stage in FLOPs, for the time estimates: executed pre-training FLOPs
    from the configs; fine-tuning as 6 x parameters of one stack x its training tokens (a
    probe's frozen encoder costs about half; seq2seq's tokens, source and target, each pass one
    of its two stacks)."""
    weights = {}
    params = 12 * scale.layers * scale.hidden ** 2
    for stage in stages:
        if isinstance(stage, PretrainStage):
            weights[stage.name] = accounting.run_cost(stage.config).total
        elif isinstance(stage, FinetuneStage):
            kind = stage.name.split("/")[2].rsplit("_", 1)[0]
            schedule = scale.schedule(kind)
            examples = (schedule.epochs * EXAMPLES_PER_EPOCH[kind] if schedule.epochs
                        else schedule.steps * 32)
            cost = 6.0 * params * examples * TOKENS_PER_EXAMPLE[kind]
            weights[stage.name] = cost * (0.5 if stage.probe else 1)
        else:
            weights[stage.name] = 0.0
    return weights


def stage_names(scale_name: str, seeds: int) -> list[str]:
    return [stage.name for stage in grid(Path("OUT"), SCALES[scale_name], seeds, [])]
