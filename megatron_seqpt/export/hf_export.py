"""``seqpt export hf``: a run's checkpoint as a Hugging Face model directory.

The checkpoint (written under any TP/PP/DP layout; megatron-core reshards it) is loaded into
the model built whole in each process, its tensors are renamed and split (export/hf_layout.py)
into the matching transformers class, and the result is checked against the project's own
model on text of the built-in corpus before anything is published (under a launch of several
ranks, by the first). The directory is written under a temporary name and renamed when
complete: safetensors weights, config.json, generation_config.json (seq2seq), the fast
tokenizer, the sentencepiece model, README.md (a model card) and seqpt_export.json (where it
came from, and the check's result).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Optional

import torch

from megatron_seqpt.config import RunConfig
from megatron_seqpt.errors import UserError
from megatron_seqpt.export import hf_config, hf_layout
from megatron_seqpt.export.hf_tokenizer import hf_tokenizer
from megatron_seqpt.export.model_card import model_card
from megatron_seqpt.export.parity import max_logit_difference
from megatron_seqpt.files import check_new_output, staged_output
from megatron_seqpt.runtime import distributed, launch_env
from megatron_seqpt.runtime.log import log
from megatron_seqpt.tasks.config import FinetuneConfig
from megatron_seqpt.tasks.pretrained import find_pretrained
from megatron_seqpt.tasks.run_model import LoadedRun, load_run
from megatron_seqpt.tasks.task_data import task_kind
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer

SENTENCEPIECE_FILE = "sentencepiece.model"
EXPORT_RECORD = "seqpt_export.json"
# Largest logit difference accepted at export, relative to the logits' scale (fp32 rounding
# through a few layers is about 1e-6 of it).
PARITY_TOLERANCE = 1e-4
AS_CHOICES = ("encoder", "classifier", "tagger", "seq2seq")
# What each class is asked for as, and how a run of another kind is turned into it.
_AS = {hf_config.MLM_CLASS: "encoder", hf_config.CLASSIFIER_CLASS: "classifier",
       hf_config.TAGGER_CLASS: "tagger", hf_config.SEQ2SEQ_CLASS: "seq2seq"}
_HOW_TO_GET = {
    ("seq2seq", "encoder"): "extract its encoder first (seqpt convert extract-encoder "
                            "--seq2seq RUN --output ENC) and export that",
}


def require_transformers() -> None:
    try:
        import safetensors  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise UserError("Hugging Face export needs transformers and safetensors: "
                        "pip install -e '.[export]'") from None


def target_class(config: RunConfig, meta: dict, where: Path) -> str:
    """The transformers class of the run's model."""
    if isinstance(config, FinetuneConfig):
        kind = task_kind(config.task)
        if kind == "classification":
            if config.task.pooling != "cls":
                raise UserError(
                    f"{where}: this classifier pools the mean of the encoder states "
                    f"(task.pooling={config.task.pooling}); {hf_config.CLASSIFIER_CLASS} "
                    "pools the first token, so it cannot compute this model. Fine-tune with "
                    "task.pooling=cls to export a classifier, or export the encoder it came "
                    f"from ({config.init.from_run})")
            return hf_config.CLASSIFIER_CLASS
        return hf_config.TAGGER_CLASS if kind == "tagging" else hf_config.SEQ2SEQ_CLASS
    return hf_config.MLM_CLASS if meta["model"]["kind"] == "encoder" \
        else hf_config.SEQ2SEQ_CLASS


def weight_map(architecture: str, config: RunConfig, vocab_size: int) -> hf_layout.WeightMap:
    model = config.model
    if architecture == hf_config.SEQ2SEQ_CLASS:
        return hf_layout.blenderbot(model.encoder.num_layers, model.decoder.num_layers,
                                    model.encoder.num_attention_heads,
                                    model.decoder.num_attention_heads, vocab_size)
    head = {hf_config.MLM_CLASS: "mlm", hf_config.CLASSIFIER_CLASS: "classification",
            hf_config.TAGGER_CLASS: "tagging"}[architecture]
    return hf_layout.megatron_bert(model.encoder.num_layers, model.encoder.num_attention_heads,
                                   head)


def hf_model_config(architecture: str, config: RunConfig, vocab_size: int,
                    tokenizer: SentencePieceTokenizer):
    if architecture == hf_config.SEQ2SEQ_CLASS:
        return hf_config.blenderbot_config(config.model, vocab_size, tokenizer)
    labels = list(config.task.labels or []) if isinstance(config, FinetuneConfig) else None
    return hf_config.megatron_bert_config(config.model, vocab_size, architecture, labels)


def load_run_model(run: Path, step: Optional[int]) -> LoadedRun:
    """The run's model as the export maps it: megatron-core's local layers (their parameter
    names are the ones mapped; any layout's checkpoint loads), in the checkpoint's precision,
    outside its precision wrapper. The caller ends the process group."""
    found = find_pretrained(run, step)
    loaded = load_run(found, "local", found.meta.get("precision", "fp32"))
    return dataclasses.replace(loaded, model=getattr(loaded.model, "module", loaded.model))


def _project_state(model: torch.nn.Module, mapping: hf_layout.WeightMap) -> dict:
    """The tensors the map takes, on the CPU in fp32 for the check. Left out: megatron-core's
    aliases (T5's second names for the position table and the output layer), extra states,
    and the training-only encoder MLM head of a T5 trained with that loss."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()
             if isinstance(v, torch.Tensor)}
    unused = set(state) - mapping.project_names() - {
        "position_embeddings.weight", "lm_head.output_layer.bias"}
    unexpected = sorted(k for k in unused if not k.startswith("encoder_mlm_"))
    if unexpected:
        raise UserError(f"the model has tensors the export does not map: "
                        f"{', '.join(unexpected[:5])}")
    if unused:
        log("left out: the encoder MLM head (a training-time loss of this T5 run; the "
            "Hugging Face model is the seq2seq model)")
    return {k: v for k, v in state.items() if k in mapping.project_names()}


def _hf_model(architecture: str, hf_cfg, hf_state: dict):
    import transformers

    cls = getattr(transformers, architecture)
    model = cls(hf_cfg).float().eval()
    result = model.load_state_dict({k: v.float() for k, v in hf_state.items()}, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(f"the mapped weights do not fit {architecture}: missing "
                        f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")
    return model


def _readable_as_umask_allows(directory: Path) -> None:
    """transformers writes the weights owner-only (through a temporary file); a model
    directory is for sharing, so every file gets the mode new files get here."""
    umask = os.umask(0)
    os.umask(umask)
    for path in directory.iterdir():
        path.chmod(0o666 & ~umask)


def export_hf(run: Path, output: Path, step: Optional[int] = None,
              expect: Optional[str] = None, force: bool = False) -> Path:
    """Write the run's model as a Hugging Face directory at ``output``; ``expect``: refuse
    unless the run holds that kind of model (one of AS_CHOICES)."""
    require_transformers()
    output = Path(output)
    check_new_output(output, force)
    try:
        loaded = load_run_model(Path(run), step)
        return _write(loaded, output, expect)
    finally:
        distributed.shutdown()


def _write(loaded: LoadedRun, output: Path, expect: Optional[str]) -> Path:
    config, meta, where = loaded.config, loaded.meta, loaded.checkpoint
    architecture = target_class(config, meta, where)
    if expect is not None and _AS[architecture] != expect:
        have = _AS[architecture]
        how = _HOW_TO_GET.get((have, expect), f"export it as {have}")
        raise UserError(f"{where} holds a model of kind {have} ({architecture}), not "
                        f"{expect} (--as {expect}); {how}")
    hf_config.check_exportable(config.model, str(where))
    vocab = meta["model"]["vocab_size"]
    tokenizer = loaded.tokenizer
    mapping = weight_map(architecture, config, vocab)
    state = _project_state(loaded.model, mapping)
    hf_cfg = hf_model_config(architecture, config, vocab, tokenizer)
    hf_model = _hf_model(architecture, hf_cfg, mapping.to_hf(state))
    difference = max_logit_difference(loaded.model.float(), hf_model, tokenizer,
                                      architecture, config)
    log(f"export check: largest logit difference {difference['max_abs']:.2e} "
        f"(logits up to {difference['scale']:.1f})")
    if difference["max_abs"] > PARITY_TOLERANCE * max(1.0, difference["scale"]):
        raise UserError(f"the exported {architecture} differs from the project's model by "
                        f"{difference['max_abs']:.2e} in the logits; nothing was written. "
                        "This is a bug in the export: report it with the run's config.yaml")
    precision = meta.get("precision", "fp32")
    if precision == "bf16":
        hf_model = hf_model.to(torch.bfloat16)
    max_new = config.data.decoder_seq_length if architecture == hf_config.SEQ2SEQ_CLASS else 0
    if launch_env.detect().rank != 0:  # under a launch of several ranks the first writes
        return output
    with staged_output(output) as staging:
        hf_model.save_pretrained(staging, safe_serialization=True)
        if architecture == hf_config.SEQ2SEQ_CLASS:
            hf_config.generation_config(tokenizer, vocab, max(1, max_new - 1)).save_pretrained(
                staging)
        hf_tokenizer(tokenizer, encoder_inputs=architecture in hf_config.ENCODER_CLASSES,
                     model_max_length=config.model.max_position_embeddings
                     ).save_pretrained(staging)
        shutil.copyfile(tokenizer.model_file, staging / SENTENCEPIECE_FILE)
        parameters = sum(p.numel() for p in hf_model.parameters())
        (staging / "README.md").write_text(
            model_card(config, meta, where, architecture, parameters, difference["max_abs"]),
            encoding="utf-8")
        record = {"architecture": architecture, "checkpoint": str(where),
                  "step": meta.get("step"), "precision": precision,
                  "tokenizer": meta.get("tokenizer") or tokenizer.identity,
                  "model": dataclasses.asdict(config.model),
                  "check": {"max_abs_logit_difference": difference["max_abs"],
                            "logit_scale": difference["scale"],
                            "tokens": difference["tokens"]}}
        (staging / EXPORT_RECORD).write_text(json.dumps(record, indent=1) + "\n",
                                             encoding="utf-8")
        _readable_as_umask_allows(staging)
    log(f"wrote {architecture} to {output}")
    return output
