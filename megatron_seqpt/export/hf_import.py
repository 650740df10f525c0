"""``seqpt import hf``: a Hugging Face MegatronBertForMaskedLM or Blenderbot model (one that
``seqpt export hf`` wrote, or one of the same layout with the sentencepiece model it was
tokenized with) as a weights-only checkpoint that ``seqpt pretrain checkpoint.load=`` and
``seqpt finetune --init`` start from.

The model settings come from the Hugging Face config (whatever the given run config says about
the shape is replaced); training settings (data, schedule, layout) from the run config. The
tensors are the exported ones, renamed and fused back: export then import gives the same bits.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

import torch

from megatron_seqpt.config import RunConfig, load_run_config
from megatron_seqpt.config.loader import validate
from megatron_seqpt.config.schema import ParallelConfig
from megatron_seqpt.errors import UserError
from megatron_seqpt.export import hf_config
from megatron_seqpt.export.hf_export import SENTENCEPIECE_FILE, require_transformers, weight_map
from megatron_seqpt.models.builder import build_model
from megatron_seqpt.models.specs import choose_impl
from megatron_seqpt.models.vocab import padded_vocab_size
from megatron_seqpt.files import check_new_output, staged_output
from megatron_seqpt.recipes.weights import save_weights
from megatron_seqpt.runtime import distributed
from megatron_seqpt.runtime.log import log
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer
from megatron_seqpt.training.checkpoint import TOKENIZER_FILE

# Names of the project model that hold no tensor of their own (megatron-core's aliases) or
# that are new in a run that adds a training-time head (T5's encoder MLM loss).
_NOT_IMPORTED = ("position_embeddings.weight", "lm_head.output_layer.bias")


def _hf_config(model_dir: Path):
    from transformers import AutoConfig

    if not (model_dir / "config.json").is_file():
        raise UserError(f"--model {model_dir} has no config.json; give a directory that "
                        "seqpt export hf (or save_pretrained) wrote")
    return AutoConfig.from_pretrained(model_dir, local_files_only=True)


def _architecture(config) -> str:
    return hf_config.MLM_CLASS if config.model_type == "megatron-bert" \
        else hf_config.SEQ2SEQ_CLASS


def _tokenizer(model_dir: Path) -> SentencePieceTokenizer:
    path = model_dir / SENTENCEPIECE_FILE
    if not path.is_file():
        raise UserError(f"--model {model_dir} has no {SENTENCEPIECE_FILE}: the project's models "
                        "read sentencepiece ids, and a Hugging Face tokenizer.json cannot be "
                        "turned back into a sentencepiece model; put the .model file the "
                        f"tokenizer was made from there as {SENTENCEPIECE_FILE}")
    return SentencePieceTokenizer(path)


def run_config_for(imported, model_dir: Path, config_path: Optional[str],
                   overrides: Sequence[str], output: Path) -> RunConfig:
    config = load_run_config(config_path, overrides)
    model = hf_config.keep_runtime_settings(
        hf_config.model_config_from_hf(imported, str(model_dir)), config.model)
    if model.kind == "t5":
        model = dataclasses.replace(model, encoder_mlm_weight=config.model.encoder_mlm_weight)
    data = dataclasses.replace(config.data, tokenizer_model=str(output / TOKENIZER_FILE))
    config = dataclasses.replace(config, model=model, data=data)
    # The run config met the imported model only now: check them together.
    validate(config, source=f"{config_path or 'the default config'} with the model of "
                            f"{model_dir}")
    return config


def import_hf(model_dir: Path, config_path: Optional[str], overrides: Sequence[str],
              output: Path, force: bool = False) -> Path:
    require_transformers()
    import transformers

    model_dir, output = Path(model_dir), Path(output).absolute()
    check_new_output(output, force)
    imported = _hf_config(model_dir)
    config = run_config_for(imported, model_dir, config_path, overrides, output)
    architecture = _architecture(imported)
    tokenizer = _tokenizer(model_dir)
    vocab = padded_vocab_size(tokenizer.vocab_size, 1)
    if imported.vocab_size != vocab:
        raise UserError(f"{model_dir}: vocab_size is {imported.vocab_size}, but the project "
                        f"pads its {tokenizer.vocab_size}-piece tokenizer's vocabulary to "
                        f"{vocab} rows (models/vocab.py); this model does not fit it")
    hf_model = getattr(transformers, architecture).from_pretrained(
        model_dir, local_files_only=True, dtype="auto")
    precision = "bf16" if hf_model.dtype == torch.bfloat16 else "fp32"
    state = weight_map(architecture, config, vocab).from_hf(
        {k: v.detach() for k, v in hf_model.state_dict().items()}, str(model_dir))
    meta = {"model": {"vocab_size": vocab}, "precision": precision,
            "tokenizer": tokenizer.identity}
    config = dataclasses.replace(config, parallel=ParallelConfig())
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    try:
        impl = choose_impl("local", config.model.local_attention, ctx.backend)
        module = build_model(config.model, config.parallel, vocab, precision, impl,
                             ctx.backend)
        target = getattr(module, "module", module)
        result = target.load_state_dict(state, strict=False)
        left = [k for k in result.missing_keys if not k.endswith("_extra_state")
                and k not in _NOT_IMPORTED and not k.startswith("encoder_mlm_")]
        if left or result.unexpected_keys:
            raise UserError(f"{model_dir} does not fill the project's model: missing {left[:5]}, "
                            f"unexpected {result.unexpected_keys[:5]}")
        with staged_output(output) as staging:
            save_weights([module], staging, config, meta, tokenizer.model_file)
    finally:
        distributed.shutdown()
    log(f"imported {architecture} from {model_dir} into {output}")
    return output
