"""The pre-trained run a task model starts from: its checkpoint, config and tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from megatron_seqpt.config import RunConfig, load
from megatron_seqpt.errors import UserError
from megatron_seqpt.tasks.config import FinetuneConfig
from megatron_seqpt.training import checkpoint as ckpt
from megatron_seqpt.training.checkpoint import TOKENIZER_FILE


@dataclass(frozen=True)
class PretrainedRun:
    checkpoint: Path
    config: RunConfig
    # What the checkpoint says about itself (model shape, step, tokenizer identity).
    meta: dict
    tokenizer_model: Path

    @property
    def kind(self) -> str:
        return self.meta["model"]["kind"]


def checkpoint_at(path: str | Path, step: Optional[int], step_option: str = "--step") -> Path:
    """The checkpoint of a run (or checkpoints/ or step directory), its latest or ``step``
    (given as ``step_option``, which an error names)."""
    path = Path(path).expanduser()
    if step is None:
        return ckpt.resolve(path)
    for root in (path / "checkpoints", path):
        candidate = root / ckpt.step_dir_name(step)
        if (candidate / "metadata.json").is_file():
            return candidate
    kept = sorted(p.name for p in (path / "checkpoints").glob("step_*")) \
        if (path / "checkpoints").is_dir() else []
    raise UserError(f"{path} has no complete checkpoint at step {step} ({step_option}); it "
                    f"has: {', '.join(kept) or 'none'}")


def run_config(checkpoint: Path) -> RunConfig:
    """The config a checkpoint was written with (a pre-training or a fine-tuning run's)."""
    path = checkpoint / "config.yaml"
    if not path.is_file():
        raise UserError(f"{checkpoint} has no config.yaml; it was not written by seqpt")
    tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if "task" in tree:
        return load(FinetuneConfig, path)
    return load(RunConfig, path)


def _tokenizer_of(checkpoint: Path, config: RunConfig) -> Path:
    """The run directory's copy of its tokenizer; older runs (and conversions) name it in their
    config, or find it where their data was prepared."""
    for directory in (checkpoint.parent.parent, checkpoint.parent, checkpoint):
        if (directory / TOKENIZER_FILE).is_file():
            return directory / TOKENIZER_FILE
    from megatron_seqpt.data.prepare import prepare

    return prepare(config.data).tokenizer_model


def find_pretrained(path: str | Path, step: Optional[int] = None,
                    step_option: str = "--step") -> PretrainedRun:
    checkpoint = checkpoint_at(path, step, step_option)
    meta = ckpt.content_metadata(checkpoint)
    config = run_config(checkpoint)
    tokenizer = _tokenizer_of(checkpoint, config)
    if meta.get("tokenizer"):
        from megatron_seqpt.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer

        ckpt.check_tokenizer(checkpoint, meta["tokenizer"], SentencePieceTokenizer(tokenizer),
                             "put the run's own tokenizer back at "
                             f"{ckpt.tokenizer_file_of(checkpoint)}")
    return PretrainedRun(checkpoint, config, meta, tokenizer)
