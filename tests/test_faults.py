"""Faults and bad input around run directories, checkpoints and tokenizers: each is refused
with one message that names the thing to fix, and nothing of the run is lost or rewritten."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sentencepiece import sentencepiece_model_pb2

from megatron_seqpt.config import dump
from megatron_seqpt.errors import UserError
from megatron_seqpt.recipes import convert
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import (
    SentencePieceTokenizer,
    TokenizerModelError,
)
from megatron_seqpt.training.loop import Trainer
from tests.prepared_data import prepared_corpus
from tests.recipe_runs import trained
from tests.run_configs import tiny_config

SHORT = ["train.steps=2", "checkpoint.save_interval=2", "train.eval_interval=100"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("megatron-cache")


def swapped_tokenizer(directory: Path) -> Path:
    """The prepared tokenizer with two ordinary pieces swapped: same size and special ids,
    other ids for two pieces (what silently re-maps a run's data)."""
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(Path(prepared_corpus().tokenizer_model).read_bytes())
    a, b = 500, 501
    proto.pieces[a].piece, proto.pieces[b].piece = proto.pieces[b].piece, proto.pieces[a].piece
    path = directory / "swapped.model"
    path.write_bytes(proto.SerializeToString())
    return path


def test_resume_with_another_tokenizer_or_shape_is_refused_and_the_run_is_untouched(
        single_process, cache_dir, tmp_path):
    run = tmp_path / "run"
    config = tiny_config("encoder", cache_dir, SHORT)
    ctx = single_process.initialize(config.parallel, config.model, config.train.seed)
    Trainer(config, run, ctx).run()
    files = {name: (run / name).read_bytes() for name in ("config.yaml", "tokenizer.model")}

    swapped = swapped_tokenizer(tmp_path)
    assert SentencePieceTokenizer(swapped).vocab_size == SentencePieceTokenizer(
        prepared_corpus().tokenizer_model).vocab_size
    other = tiny_config("encoder", cache_dir, [*SHORT, "train.steps=4",
                                               f"data.tokenizer_model={swapped}"])
    with pytest.raises(UserError) as info:
        Trainer(other, run, ctx)
    message = str(info.value)
    assert "another tokenizer" in message and str(swapped) in message
    assert f"data.tokenizer_model={run / 'tokenizer.model'}" in message

    bigger = tiny_config("encoder", cache_dir, [*SHORT, "train.steps=4",
                                                "model.encoder.ffn_hidden_size=256"])
    with pytest.raises(UserError, match="another shape"):
        Trainer(bigger, run, ctx)
    assert {name: (run / name).read_bytes() for name in files} == files
    # The run itself still resumes.
    assert Trainer(tiny_config("encoder", cache_dir, [*SHORT, "train.steps=3"]), run,
                   ctx).run().step == 3


def test_a_second_writer_is_refused_and_a_killed_holder_leaves_no_stale_lock(
        single_process, cache_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from megatron_seqpt.training import run_lock; run_lock.acquire(Path(sys.argv[1]))\n"
         "print('locked', flush=True); time.sleep(600)", str(run)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        config = tiny_config("encoder", cache_dir, SHORT)
        ctx = single_process.initialize(config.parallel, config.model, config.train.seed)
        with pytest.raises(UserError) as info:
            Trainer(config, run, ctx)
        message = str(info.value)
        assert f"{run} is in use by another run" in message and f"pid {holder.pid}" in message
        assert not (run / "config.yaml").exists() and not (run / "metrics.jsonl").exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert Trainer(config, run, ctx).run().step == 2


def test_run_dir_that_is_a_file_is_refused(single_process, cache_dir, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("mine\n")
    config = tiny_config("encoder", cache_dir, SHORT)
    ctx = single_process.initialize(config.parallel, config.model, config.train.seed)
    with pytest.raises(UserError, match=f"--run-dir {path} is a file"):
        Trainer(config, path, ctx)
    assert path.read_text() == "mine\n"


def test_conversion_does_not_take_over_a_run_and_checks_the_tokenizer(tmp_path_factory,
                                                                     cache_dir, tmp_path):
    root = tmp_path_factory.mktemp("fault-runs")
    encoder = trained("encoder", root)
    dump(tiny_config("t5", cache_dir), tmp_path / "t5.yaml")
    existing = trained("t5", root)
    latest = (existing / "checkpoints" / "latest").read_text()
    with pytest.raises(UserError, match="exists and is not empty"):
        convert.warm_start(encoder, str(tmp_path / "t5.yaml"), [], existing)
    assert (existing / "checkpoints" / "latest").read_text() == latest

    swapped = swapped_tokenizer(tmp_path)
    with pytest.raises(UserError) as info:
        convert.warm_start(encoder, str(tmp_path / "t5.yaml"),
                           [f"data.tokenizer_model={swapped}"], tmp_path / "warm")
    assert "another tokenizer" in str(info.value) and str(swapped) in str(info.value)
    assert not (tmp_path / "warm").exists()

    # A conversion carries the source's tokenizer: starting from it with another is refused.
    convert.warm_start(encoder, str(tmp_path / "t5.yaml"), [], tmp_path / "warm")
    assert (tmp_path / "warm" / "tokenizer.model").read_bytes() == \
        (encoder / "tokenizer.model").read_bytes()
    from megatron_seqpt.runtime import distributed

    config = tiny_config("t5", cache_dir, [*SHORT, f"checkpoint.load={tmp_path / 'warm'}",
                                           f"data.tokenizer_model={swapped}"])
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    try:
        with pytest.raises(UserError, match="another tokenizer"):
            Trainer(config, tmp_path / "t5_run", ctx)
    finally:
        distributed.shutdown()


def test_a_file_that_is_not_a_sentencepiece_model_is_named(tmp_path):
    vocab = tmp_path / "spm.vocab"
    vocab.write_text("<pad>\t0\n</s>\t0\n")
    (tmp_path / "x.jsonl").write_text('{"text": "Hello.", "lang": "en"}\n')
    with pytest.raises(TokenizerModelError, match=f"{vocab} is not a sentencepiece model"):
        SentencePieceTokenizer(vocab)
    result = subprocess.run(
        [sys.executable, "-m", "megatron_seqpt.cli", "preprocess", "--input",
         str(tmp_path / "x.jsonl"), "--output-prefix", str(tmp_path / "out"),
         "--tokenizer-model", str(vocab)], capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "is not a sentencepiece model" in result.stderr


def _train_with_two_checkpoints(single_process, cache_dir, run: Path):
    config = tiny_config("encoder", cache_dir, ["train.steps=4", "checkpoint.save_interval=2",
                                                "train.eval_interval=100"])
    ctx = single_process.initialize(config.parallel, config.model, config.train.seed)
    Trainer(config, run, ctx).run()
    return ctx


def _damage(checkpoint: Path, kind: str) -> str:
    """Damage one file of ``checkpoint`` the way ``kind`` says; the file's name."""
    shard = sorted(checkpoint.glob("*.distcp"))[0]
    if kind == "garbage":  # same size, other bytes: only the checksum can tell
        shard.write_bytes(os.urandom(shard.stat().st_size))
        return shard.name
    if kind == "truncated":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
        return shard.name
    if kind == "empty common.pt":
        (checkpoint / "common.pt").write_bytes(b"")
        return "common.pt"
    shard.unlink()
    return shard.name


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty common.pt", "missing"])
def test_a_damaged_checkpoint_is_refused_naming_the_file_and_the_previous_one(
        kind, single_process, cache_dir, tmp_path):
    run = tmp_path / "run"
    ctx = _train_with_two_checkpoints(single_process, cache_dir, run)
    root = run / "checkpoints"
    metrics = (run / "metrics.jsonl").read_bytes()
    name = _damage(root / "step_0000004", kind)
    longer = tiny_config("encoder", cache_dir, ["train.steps=6", "checkpoint.save_interval=2",
                                                "train.eval_interval=100"])
    with pytest.raises(UserError) as info:
        Trainer(longer, run, ctx)
    message = str(info.value)
    assert f"{root / 'step_0000004'} is damaged: {name}" in message
    assert "step_0000002" in message and str(root / "latest") in message
    # Nothing was rewritten or pruned.
    assert (run / "metrics.jsonl").read_bytes() == metrics
    assert sorted(p.name for p in root.glob("step_*")) == ["step_0000002", "step_0000004"]
    # Following the advice resumes from the intact checkpoint.
    (root / "latest").write_text("step_0000002\n")
    resumed = Trainer(longer, run, ctx)
    assert resumed.state.step == 2
    assert resumed.run().step == 6


def test_non_finite_weights_are_never_saved(single_process, cache_dir, tmp_path):
    run = tmp_path / "run"
    ctx = _train_with_two_checkpoints(single_process, cache_dir, run)
    longer = tiny_config("encoder", cache_dir, ["train.steps=20", "checkpoint.save_interval=1",
                                                "train.eval_interval=100",
                                                "train.max_skipped_steps=3"])
    trainer = Trainer(longer, run, ctx)
    with torch.no_grad():
        next(trainer.modules[0].parameters()).view(-1)[0] = float("nan")
    result = trainer.run()
    assert result.status == "diverged" and result.step < 20
    root = run / "checkpoints"
    assert (root / "latest").read_text().strip() == "step_0000004"
    assert sorted(p.name for p in root.glob("step_*")) == ["step_0000002", "step_0000004"]
    summary = json.loads((run / "result.json").read_text(), parse_constant=_no_constants)
    assert summary["status"] == "diverged"


def _no_constants(name: str) -> None:
    raise AssertionError(f"result.json holds {name}, which is not JSON")


def test_a_child_the_killed_holder_forked_does_not_keep_the_lock(tmp_path):
    """megatron-core's checkpoint writers are forked children; one that outlives a kill -9 of
    the run (observed: hung on a futex) must not lock the run directory forever."""
    from megatron_seqpt.training import run_lock

    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import os, sys, time; from pathlib import Path; "
         "from megatron_seqpt.training import run_lock; run_lock.acquire(Path(sys.argv[1]))\n"
         "if os.fork() == 0: print(os.getpid(), flush=True)\n"
         "time.sleep(600)", str(run)],
        stdout=subprocess.PIPE, text=True)
    # The child prints once its fork hooks have run: killing the holder before that would
    # race the child's closing of its copy of the lock.
    child = int(holder.stdout.readline())
    try:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        os.kill(child, 0)  # the child lives on
        run_lock.acquire(run)  # not refused
        run_lock.release(run)
    finally:
        os.kill(child, signal.SIGKILL)
