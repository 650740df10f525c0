"""Scoring and generation under a launch of several ranks: the ranks share the batches (each
runs its part of the model calls), every rank gets the whole result, the first alone writes it,
and the result is the one a single process gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from megatron_seqpt import cli
from tests.recipe_runs import trained

QUIET = ["logging.tensorboard=false", "--no-evaluate"]
SOURCES = ["Hallo Welt, wie geht es dir heute?", "the cat sat on the mat",
           "Una frase un poco más larga que las otras, con comas y puntos.", "ok",
           "Il pleut depuis ce matin sur la ville.", "Mir geht es gut, danke."] * 5


@pytest.fixture(scope="module")
def tuned(recipe_root, tmp_path_factory):
    """Two-step fine-tuned runs: topic (classification) from the tiny encoder, restore
    (seq2seq) from the tiny T5."""
    root = tmp_path_factory.mktemp("tuned")
    runs = {}
    for task, kind in (("topic", "encoder"), ("restore", "t5")):
        runs[task] = root / task
        assert cli.main(["finetune", "--run-dir", str(runs[task]), "--init",
                         str(trained(kind, recipe_root)), f"task.builtin={task}",
                         "task.epochs=null", "train.steps=2", *QUIET]) == 0
    return runs


def _counting_embedding_calls() -> list[int]:
    """Count the forward calls of megatron-core's embedding in this rank process (one per
    batch when scoring, one per batch and decoding step when generating)."""
    import torch
    from megatron.core.models.common.embeddings.language_model_embedding import (
        LanguageModelEmbedding,
    )

    calls = [0]

    def count(module, args, output):
        if isinstance(module, LanguageModelEmbedding):
            calls[0] += 1

    torch.nn.modules.module.register_module_forward_hook(count)
    return calls


def _evaluate(run_dir: str, output: str) -> tuple[dict, int]:
    """(Runs in a rank process.) The scores every rank returns, and its embedding calls."""
    from megatron_seqpt.tasks.evaluate import evaluate_run

    calls = _counting_embedding_calls()
    result = evaluate_run(run_dir, output=Path(output))
    return result, calls[0]


def _generate(run_dir: str, sources: list[str]) -> tuple[list[list[int]], int]:
    """(Runs in a rank process.) Beam-2 generation on every rank, and its embedding calls. The
    weight matrices are redrawn (the same on every rank) so that the sources get outputs of
    their own: the two-step model says the same for all, which would hide results put back in
    another order."""
    import torch

    from megatron_seqpt.runtime import distributed
    from megatron_seqpt.tasks.generation import GenerationConfig, generate
    from megatron_seqpt.tasks.pretrained import find_pretrained
    from megatron_seqpt.tasks.run_model import load_run

    loaded = load_run(find_pretrained(run_dir, None))
    draw = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in loaded.model.parameters():
            if param.dim() > 1:  # the matrices; norms and biases as trained
                param.copy_(torch.randn(param.shape, generator=draw) * 0.05)
    tokenizer = loaded.tokenizer
    calls = _counting_embedding_calls()
    try:
        generated = generate(loaded.model, [tokenizer.tokenize(s) for s in sources],
                             bos=tokenizer.bos, eos=tokenizer.eos, pad=tokenizer.pad,
                             config=GenerationConfig(beam_size=2, max_new_tokens=6, batch_size=4),
                             vocab_size=tokenizer.vocab_size)
    finally:
        distributed.shutdown()
    return generated, calls[0]


def _shared(one: int, per_rank: list[int]) -> bool:
    return all(0 < calls < one for calls in per_rank) and sum(per_rank) == one


@pytest.mark.parametrize("task", ["topic", "restore"])
def test_scoring_is_shared_by_the_ranks_and_gives_one_process_scores(task, tuned, ranks,
                                                                     tmp_path):
    run_dir = str(tuned[task])
    ((alone, one_calls),) = ranks.run(_evaluate, 1, run_dir, str(tmp_path / "one.json"))
    shared = ranks.run(_evaluate, 2, run_dir, str(tmp_path / "two.json"))
    assert [result for result, _ in shared] == [alone, alone]
    assert _shared(one_calls, [calls for _, calls in shared]), (one_calls, shared)
    written = json.loads((tmp_path / "two.json").read_text(encoding="utf-8"))
    assert written == alone and written["examples_scored"] > 32
    # The first rank alone wrote (no other process's temporary left beside it).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.json", "two.json"]


def test_generation_is_shared_by_the_ranks_and_gives_one_process_text(tuned, ranks):
    run_dir = str(tuned["restore"])
    ((alone, one_calls),) = ranks.run(_generate, 1, run_dir, SOURCES)
    shared = ranks.run(_generate, 2, run_dir, SOURCES)
    assert [generated for generated, _ in shared] == [alone, alone]
    assert len(alone) == len(SOURCES) and len(set(map(tuple, alone))) >= 3
    assert _shared(one_calls, [calls for _, calls in shared]), (one_calls, shared)


def _finetune_command(run_dir: str, init: str) -> int:
    """(Runs in a rank process.) ``seqpt finetune`` as torchrun starts it on each rank."""
    return cli.main(["finetune", "--run-dir", run_dir, "--init", init, "task.builtin=topic",
                     "task.epochs=null", "train.steps=2", "logging.tensorboard=false"])


def test_a_multi_rank_finetune_scores_its_model_at_the_end(recipe_root, ranks, tmp_path):
    """It used to stop at 'score the model with: seqpt evaluate' on every rank."""
    run_dir = tmp_path / "run"
    assert ranks.run(_finetune_command, 2, str(run_dir),
                     str(trained("encoder", recipe_root))) == [0, 0]
    scores = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))
    assert scores["step"] == 2 and scores["task"] == "classification"
    assert scores["examples_scored"] > 0


def _generate_command(run_dir: str, text: str, output: str) -> int:
    """(Runs in a rank process.) ``seqpt generate --input -`` with stdin as a launcher hands it
    on: the text to the first rank, nothing to the others (srun's default; under torchrun
    every rank shares one pipe, and which reads what is chance)."""
    import io
    import os
    import sys

    sys.stdin = io.StringIO(text if os.environ["RANK"] == "0" else "")
    return cli.main(["generate", "--run-dir", run_dir, "--input", "-", "--max-new-tokens", "3",
                     "--batch-size", "8", "--output", output])


def test_generation_from_stdin_under_a_launch_uses_the_first_ranks_sources(tuned, ranks,
                                                                           tmp_path):
    """Each rank read stdin for itself: the one that got nothing generated for no source and
    the ranks' shares of the batches did not fit together."""
    text = "".join(f"{source}\n" for source in SOURCES)
    run_dir = str(tuned["restore"])
    assert ranks.run(_generate_command, 1, run_dir, text, str(tmp_path / "one.txt")) == [0]
    assert ranks.run(_generate_command, 2, run_dir, text, str(tmp_path / "two.txt")) == [0, 0]
    one = (tmp_path / "one.txt").read_text(encoding="utf-8")
    assert one.count("\n") == len(SOURCES)
    assert (tmp_path / "two.txt").read_text(encoding="utf-8") == one
