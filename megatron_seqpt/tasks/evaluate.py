"""``seqpt evaluate``: score a fine-tuned run on its test split (or a given file), next to the
baseline that reads a score against chance (the training data's most frequent label or tag;
copying the source for seq2seq), overall and per language; written to RUN/eval.json (another
file or step: a file of its own, ``default_output``).

Predictions are made from the run's checkpoint (written under any layout) by a model whole in
each process; the ranks of a launch share the batches, and the first writes the scores.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Optional

from megatron_seqpt.errors import UserError
from megatron_seqpt.files import checked_output_file, publish_files
from megatron_seqpt.runtime import distributed, launch_env
from megatron_seqpt.runtime.log import log
from megatron_seqpt.tasks import metrics as task_metrics
from megatron_seqpt.tasks import predict
from megatron_seqpt.tasks.config import FinetuneConfig
from megatron_seqpt.tasks.examples import (
    ClassificationExample,
    Example,
    TaggingExample,
)
from megatron_seqpt.tasks.pretrained import find_pretrained
from megatron_seqpt.tasks.run_model import load_run
from megatron_seqpt.tasks.task_data import load_splits, read_split, task_files
from megatron_seqpt.tasks.workload import FinetuneWorkload

EVAL_FILE = "eval.json"


class NothingToScore(UserError):
    """The run holds no examples back and no file was given: there is nothing to score."""


def _gold(example: Example):
    if isinstance(example, ClassificationExample):
        return example.label
    if isinstance(example, TaggingExample):
        return list(example.tags)
    return example.target


def _shown_input(example: Example):
    if isinstance(example, ClassificationExample):
        return example.text if example.text_pair is None else [example.text, example.text_pair]
    if isinstance(example, TaggingExample):
        return list(example.words)
    return example.source


def score(kind: str, examples: list[Example], predictions: list, bio: bool) -> dict:
    gold = [_gold(e) for e in examples]
    if kind == "classification":
        return task_metrics.classification_metrics(gold, predictions)
    if kind == "tagging":
        return task_metrics.tagging_metrics(gold, predictions, bio)
    return task_metrics.seq2seq_metrics(gold, predictions, [e.lang for e in examples])


def baseline(kind: str, train: list[Example], examples: list[Example]) -> tuple[str, list]:
    """(description, predictions) of the baseline a model must beat."""
    if kind == "seq2seq":
        return "copy the source", [e.source for e in examples]
    if kind == "classification":
        label = Counter(e.label for e in train).most_common(1)[0][0]
        return f"majority class '{label}'", [label] * len(examples)
    tag = majority_tag(train)
    return f"majority tag '{tag}'", [[tag] * len(e.words) for e in examples]


def majority_tag(train: list[TaggingExample]) -> str:
    return Counter(tag for e in train for tag in e.tags).most_common(1)[0][0]


def _scored(kind: str, examples: list[Example], predictions: list, reference: list,
            bio: bool) -> dict:
    return {"examples": len(examples), "metrics": score(kind, examples, predictions, bio),
            "baseline": score(kind, examples, reference, bio)}


def report(kind: str, examples: list[Example], predictions: list, train: list[Example],
           labels: list[str], shown: int) -> dict:
    """Metrics of the model and of the baseline, overall and per language, and examples."""
    bio = kind == "tagging" and task_metrics.is_bio(labels)
    name, reference = baseline(kind, train, examples)
    overall = _scored(kind, examples, predictions, reference, bio)
    result = {"metrics": overall["metrics"],
              "baseline": {"name": name, "metrics": overall["baseline"]},
              "examples_scored": len(examples)}
    langs = sorted({e.lang for e in examples if e.lang})
    if langs:
        result["per_language"] = {}
        for lang in langs:
            picked = [i for i, e in enumerate(examples) if e.lang == lang]
            result["per_language"][lang] = _scored(
                kind, [examples[i] for i in picked], [predictions[i] for i in picked],
                [reference[i] for i in picked], bio)
    result["examples"] = [{"where": e.where, "lang": e.lang, "input": _shown_input(e),
                           "gold": _gold(e), "prediction": p}
                          for e, p in list(zip(examples, predictions))[:shown]]
    return result


def _examples_to_score(config: FinetuneConfig, test_file: Optional[str]
                       ) -> tuple[str, str, list[Example], list[Example]]:
    """(split name, source, examples, training examples)."""
    splits = load_splits(config.task, with_test=True)
    if test_file is not None:
        files = task_files(config.task)
        return "test", test_file, read_split(Path(test_file), config.task, files), splits.train
    if splits.test is not None:
        return "test", splits.sources["test"], splits.test, splits.train
    return "valid", splits.sources["valid"], splits.valid, splits.train


def default_output(run_dir: Path, test_file: Optional[str], step: Optional[int]) -> Path:
    """RUN/eval.json for the run's own score (its test split, latest checkpoint: what the
    reproduction report reads); a file named after the other data or step otherwise, so that
    scoring them never replaces it."""
    parts = [Path(test_file).stem] if test_file is not None else []
    parts += [f"step_{step}"] if step is not None else []
    return run_dir / ("_".join(["eval", *parts]) + ".json" if parts else EVAL_FILE)


def evaluate_run(run_dir: str | Path, *, test_file: Optional[str] = None,
                 step: Optional[int] = None, output: Optional[Path] = None) -> dict:
    """Score the run's checkpoint (latest, or ``step``); writes ``output`` (default:
    ``default_output``), checked before the model is loaded."""
    run_dir = Path(run_dir)
    output = checked_output_file(output or default_output(run_dir, test_file, step))
    found = find_pretrained(run_dir, step)
    if not isinstance(found.config, FinetuneConfig):
        raise UserError(f"{run_dir} is a pre-training run; fine-tune it first (seqpt finetune "
                        f"--init {run_dir} ...) and evaluate the fine-tuned run")
    split, source, examples, train = _examples_to_score(found.config, test_file)
    if not examples:
        raise NothingToScore(f"{run_dir}: nothing to score: task.split "
                             f"{found.config.task.split} holds no examples back and the task "
                             "names no validation or test file; score a file with seqpt "
                             f"evaluate --run-dir {run_dir} --test-file FILE")
    try:
        loaded = load_run(found)
        workload = FinetuneWorkload(loaded.config)
        features, encoding = workload.feature_encoder(loaded.tokenizer).encode_all(examples,
                                                                                  split)
        log(encoding.describe(split))
        predictions = _predict(workload, loaded.model, features, loaded.tokenizer, train,
                               loaded.device)
    finally:
        distributed.shutdown()
    result = {"run": str(run_dir), "checkpoint": str(found.checkpoint),
              "step": found.meta["step"], "task": workload.kind, "split": split,
              "data": source,
              **report(workload.kind, examples, predictions, train, workload.labels,
                       loaded.config.task.eval_examples)}
    if launch_env.detect().rank == 0:  # every rank has the whole result
        publish_files({output: (json.dumps(result, indent=1, ensure_ascii=False) + "\n"
                                ).encode("utf-8")})
    return result


def _predict(workload: FinetuneWorkload, model, features, tokenizer, train, device) -> list:
    data = workload.config.data
    if workload.kind == "classification":
        return predict.predict_labels(model, features, workload.labels, data.seq_length, device)
    if workload.kind == "tagging":
        return predict.predict_tags(model, features, workload.labels, data.seq_length, device,
                                    fallback=majority_tag(train))
    return predict.generate_text(model, features, tokenizer, workload.config.task.generation,
                                 data.decoder_seq_length)


def format_table(result: dict) -> str:
    """The metrics of model and baseline, then per language, as aligned text."""
    lines = [f"{result['task']} on {result['split']} ({result['data']}, "
             f"{result['examples_scored']} examples), step {result['step']}",
             f"  {'metric':<12} {'model':>8} {'baseline':>9}   baseline: "
             f"{result['baseline']['name']}"]
    for name, value in result["metrics"].items():
        lines.append(f"  {name:<12} {value:>8.3f} {result['baseline']['metrics'][name]:>9.3f}")
    for lang, scored in result.get("per_language", {}).items():
        shown = ", ".join(f"{k} {v:.3f} ({scored['baseline'][k]:.3f})"
                          for k, v in scored["metrics"].items())
        lines.append(f"  {lang:<4} n={scored['examples']:<5} {shown}")
    return "\n".join(lines)
