"""Fine-tuning on the built-in tasks with tiny pre-trained runs: task models beat the
majority baseline, a probe trains only its head, a seq2seq model learns to copy, runs resume
exactly after SIGTERM, tensor parallelism gives the single-process gradients, and bad task data
stops the command with its file and line before anything is written."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from megatron.core import dist_checkpointing

from megatron_seqpt import cli
from megatron_seqpt.tasks.builtin import builtin_task
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer
from megatron_seqpt.training import checkpoint as ckpt
from megatron_seqpt.training.metrics import read_metrics
from tests.recipe_runs import trained
from tests.tolerance import assert_close_to_scale

QUIET = ["logging.tensorboard=false", "logging.log_interval=25"]


@pytest.fixture(scope="module")
def encoder_run(recipe_root):
    return trained("encoder", recipe_root)


@pytest.fixture(scope="module")
def t5_run(recipe_root):
    return trained("t5", recipe_root)


def finetune(run_dir: Path, init: Path, *args: str) -> int:
    return cli.main(["finetune", "--run-dir", str(run_dir), "--init", str(init), *args, *QUIET])


def eval_result(run_dir: Path, name: str = "eval.json") -> dict:
    return json.loads((run_dir / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("task", ["topic", "punct"])
def test_finetuned_model_beats_the_majority_baseline(task, encoder_run, single_process,
                                                     tmp_path):
    assert finetune(tmp_path, encoder_run, f"task.builtin={task}", "task.epochs=3",
                    "optim.lr=2e-3", "optim.warmup_steps=10") == 0
    result = eval_result(tmp_path)
    assert result["split"] == "test" and result["task"] == builtin_task(task).kind
    assert result["examples_scored"] == sum(1 for line in open(builtin_task(task).test)
                                            if line.startswith(("{", "# lang")))
    model, chance = result["metrics"], result["baseline"]["metrics"]
    # Most punct words take the majority tag (O): accuracy moves little, macro-F1 shows more.
    assert model["accuracy"] > chance["accuracy"] + 0.005, result
    assert model["macro_f1"] > chance["macro_f1"] + 0.05, result
    assert set(result["per_language"]) == set(builtin_task(task).languages)
    config = (tmp_path / "config.yaml").read_text()
    assert "labels:" in config and "from_run:" in config


def _body_and_head(checkpoint: Path) -> tuple[dict, dict]:
    tensors = dist_checkpointing.load_plain_tensors(str(checkpoint))
    body = {k: v for k, v in tensors.items() if k.startswith(("embedding.", "encoder."))}
    head = {k: v for k, v in tensors.items() if k.startswith("task_head.")}
    return body, head


def test_probe_trains_only_the_head(encoder_run, single_process, tmp_path):
    frozen = ["freeze.embeddings.frozen=true", "freeze.encoder.frozen=true"]
    assert finetune(tmp_path, encoder_run, "task.builtin=topic", "task.epochs=2",
                    "optim.lr=3e-3", *frozen) == 0
    valid = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl")
             if r.get("split") == "valid"]
    assert valid[-1] < valid[0] - 0.1, valid  # the head learns
    records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "trainable" in r]
    assert {r["trainable"] for r in records} == {"heads"}
    # Compare under the same process group dist_checkpointing needs.
    torch.distributed.init_process_group("gloo", init_method="tcp://127.0.0.1:29731", rank=0,
                                         world_size=1)
    try:
        body, head = _body_and_head(ckpt.resolve(tmp_path))
        pretrained = dist_checkpointing.load_plain_tensors(str(ckpt.resolve(encoder_run)))
    finally:
        torch.distributed.destroy_process_group()
    assert body and head
    for key, value in body.items():
        assert torch.equal(value, pretrained[key]), key
    assert head["task_head.classifier.weight"].abs().sum() > 0


@pytest.mark.slow
def test_seq2seq_model_learns_to_copy(t5_run, single_process, tmp_path):
    """Sources made of words the tokenizer holds as one piece each, the target is the source:
    greedy generation from the fine-tuned T5 reproduces every held-back input exactly."""
    tokenizer = SentencePieceTokenizer(t5_run / "tokenizer.model")
    pieces = [tokenizer.piece(int(i)) for i in tokenizer.ordinary_ids]
    words = sorted(p[1:] for p in pieces if p.startswith("\u2581") and p[1:].isalpha()
                   and len(p) > 2)[:20]
    rng = random.Random(0)
    lines = []
    for _ in range(2000):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(2, 5)))
        lines.append(json.dumps({"source": text, "target": text}))
    (tmp_path / "copy.jsonl").write_text("\n".join(lines) + "\n")
    run_dir = tmp_path / "run"
    assert finetune(run_dir, t5_run, "--task-kind", "seq2seq", "--train-file",
                    str(tmp_path / "copy.jsonl"), "task.split=98,1,1", "task.epochs=null",
                    "train.steps=600", "optim.lr=1e-3", "optim.warmup_steps=30",
                    "model.hidden_dropout=0", "model.attention_dropout=0") == 0
    result = eval_result(run_dir)
    assert result["examples_scored"] == 20
    assert result["metrics"]["exact_match"] == 1.0, result["examples"][:5]
    assert result["baseline"]["name"] == "copy the source"
    # The same model through seqpt generate, greedy and beam search, on new inputs.
    inputs = [" ".join(rng.choice(words) for _ in range(4)) for _ in range(6)]
    (tmp_path / "inputs.txt").write_text("\n".join(inputs) + "\n")
    for beam in ("1", "3"):
        out = tmp_path / f"out{beam}.txt"
        assert cli.main(["generate", "--run", str(run_dir), "--input",
                         str(tmp_path / "inputs.txt"), "--output", str(out),
                         "--beam-size", beam]) == 0
        assert out.read_text().splitlines() == inputs


def test_finetuning_resumes_exactly_after_sigterm(encoder_run, tmp_path):
    """A run stopped by SIGTERM and started again takes the steps an uninterrupted run takes
    (constant LR, so that the step count given to the second part changes nothing else)."""
    settings = ["task.builtin=punct", "task.epochs=null", "optim.decay_style=constant",
                "optim.warmup_steps=0", "logging.log_interval=1", "logging.tensorboard=false",
                "train.eval_interval=100000", "checkpoint.save_interval=100000"]
    def command(run_dir, steps):
        return [sys.executable, "-m", "megatron_seqpt.cli", "finetune", "--init",
                str(encoder_run), "--no-evaluate", "--run-dir", str(run_dir), *settings,
                f"train.steps={steps}"]

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    stopped_dir = tmp_path / "stopped"
    proc = subprocess.Popen(command(stopped_dir, 100000), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 180
    while time.time() < deadline and not ((stopped_dir / "metrics.jsonl").exists() and len(
            [r for r in read_metrics(stopped_dir / "metrics.jsonl") if "split" not in r]) >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, output
    stopped_at = json.loads((stopped_dir / "result.json").read_text())["step"]
    total = stopped_at + 3
    resumed = subprocess.run(command(stopped_dir, total), capture_output=True, text=True,
                             env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"at step {stopped_at}" in resumed.stdout
    straight = subprocess.run(command(tmp_path / "straight", total), capture_output=True,
                              text=True, env=env, timeout=300)
    assert straight.returncode == 0, straight.stdout + straight.stderr

    def losses(run_dir):
        return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl")
                if "split" not in r}

    after = losses(stopped_dir)
    assert sorted(after)[-3:] == [stopped_at + 1, stopped_at + 2, total]
    assert after == losses(tmp_path / "straight")


def _loss_and_gradients(task_args, init, run_dir, grads_dir):
    """(Runs on each rank.) One global batch's loss; the reduced gradients saved as a
    checkpoint, so that any layout's shards reassemble into whole tensors."""
    import dataclasses

    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    from megatron_seqpt.runtime import distributed
    from megatron_seqpt.tasks.resolve import resolve_config
    from megatron_seqpt.tasks.workload import FinetuneWorkload
    from megatron_seqpt.training.loop import Trainer

    config, pretrained = resolve_config(None, [f"init.from_run={init}", *task_args, *QUIET,
                                               "model.hidden_dropout=0",
                                               "model.attention_dropout=0", "task.head_dropout=0"])
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    trainer = Trainer(config, run_dir, ctx, workload=FinetuneWorkload(config, pretrained))
    loss = trainer.forward_backward()["lm loss"]

    def with_grads(node):
        if isinstance(node, dict):
            return {k: v for k, v in ((k, with_grads(v)) for k, v in node.items())
                    if v is not None}
        if isinstance(node, ShardedTensor) and getattr(node.data, "main_grad", None) is not None:
            return dataclasses.replace(node, data=node.data.main_grad.float().clone())
        return None

    state = with_grads(trainer.modules[0].sharded_state_dict())
    if torch.distributed.get_rank() == 0:
        Path(grads_dir).mkdir(parents=True)
    torch.distributed.barrier()
    dist_checkpointing.save(state, str(grads_dir))
    distributed.shutdown()
    return loss


def _whole(path: Path) -> dict:
    torch.distributed.init_process_group("gloo", init_method="tcp://127.0.0.1:29732", rank=0,
                                         world_size=1)
    try:
        return dist_checkpointing.load_plain_tensors(str(path))
    finally:
        torch.distributed.destroy_process_group()


TP2 = ["parallel.tensor_model_parallel_size=2"]


@pytest.mark.parametrize("task, layout", [
    ("topic", TP2), ("punct", TP2 + ["parallel.sequence_parallel=true"]), ("restore", TP2)],
    ids=["classification-tp2", "tagging-tp2-sp", "seq2seq-tp2"])
def test_tensor_parallel_finetuning_matches_one_process(task, layout, encoder_run, t5_run,
                                                        ranks, tmp_path):
    init = t5_run if task == "restore" else encoder_run
    task_args = [f"task.builtin={task}", "train.global_batch_size=8", "train.micro_batch_size=4"]
    (ref_loss,) = ranks.run(_loss_and_gradients, 1, task_args, init, tmp_path / "one",
                            tmp_path / "one-grads")
    losses = ranks.run(_loss_and_gradients, 2, [*task_args, *layout], init, tmp_path / "two",
                       tmp_path / "two-grads")
    assert losses == pytest.approx([ref_loss] * 2, rel=1e-6)
    ref, got = _whole(tmp_path / "one-grads"), _whole(tmp_path / "two-grads")
    assert got.keys() == ref.keys()
    assert any(k.startswith("task_head.") for k in ref) == (task != "restore")
    for key, value in got.items():
        assert_close_to_scale(value, ref[key], key)


def test_bad_task_data_stops_before_anything_is_written(encoder_run, single_process, tmp_path,
                                                        capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "a"}\n{"text": "no label"}\n')
    run_dir = tmp_path / "run"
    assert cli.main(["finetune", "--run-dir", str(run_dir), "--init", str(encoder_run),
                     "--task-kind", "classification", "--train-file", str(bad)]) == 2
    error = capsys.readouterr().err
    assert f"{bad}:2:" in error and "label" in error and "Traceback" not in error
    assert not run_dir.exists()


def test_evaluating_a_pretraining_run_says_to_fine_tune_it_first(encoder_run, capsys):
    assert cli.main(["evaluate", "--run", str(encoder_run)]) == 2
    assert "is a pre-training run; fine-tune it first" in capsys.readouterr().err
    assert not (encoder_run / "eval.json").exists()


def test_scoring_another_file_or_step_keeps_the_runs_own_score(encoder_run, single_process,
                                                               tmp_path, capsys):
    """eval.json is the run's score (its test split, latest checkpoint; the reproduction report
    reads it): scoring another file or an earlier step goes to a file of its own, or --output,
    checked before anything is loaded."""
    run_dir = tmp_path / "run"
    assert finetune(run_dir, encoder_run, "task.builtin=topic", "task.epochs=null",
                    "train.steps=2", "checkpoint.save_interval=1", "checkpoint.keep_last=0") == 0
    own = (run_dir / "eval.json").read_text()
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"text": f"text {i}", "label": label}) + "\n"
                             for i, label in enumerate(["trivia", "food"] * 5)))
    assert cli.main(["evaluate", "--run", str(run_dir), "--test-file", str(other)]) == 0
    assert cli.main(["evaluate", "--run", str(run_dir), "--step", "1"]) == 0
    assert (run_dir / "eval.json").read_text() == own
    by_file = eval_result(run_dir, "eval_other.json")
    assert by_file["data"] == str(other) and by_file["examples_scored"] == 10
    assert eval_result(run_dir, "eval_step_1.json")["step"] == 1
    capsys.readouterr()
    taken = tmp_path / "taken"
    taken.mkdir()
    assert cli.main(["evaluate", "--run", str(tmp_path / "no_run"), "--output",
                     str(taken)]) == 2
    assert f"--output {taken} is a directory" in capsys.readouterr().err


def test_resuming_with_other_labels_is_refused(encoder_run, single_process, tmp_path, capsys):
    """The head's rows are the labels in the run's order: resumed with the same number of
    other labels (another training file, another task.labels), each row would stand for
    another label without a word."""
    run_dir = tmp_path / "run"
    common = ["--no-evaluate", "task.builtin=topic", "task.epochs=null"]
    assert finetune(run_dir, encoder_run, *common, "train.steps=1") == 0
    labels = yaml.safe_load((run_dir / "config.yaml").read_text())["task"]["labels"]
    swapped = [labels[1], labels[0], *labels[2:]]
    capsys.readouterr()
    assert finetune(run_dir, encoder_run, *common, "train.steps=2",
                    f"task.labels=[{','.join(swapped)}]") == 2
    error = capsys.readouterr().err
    assert "labels" in error and f"{labels[0]}, {labels[1]}" in error, error
    assert json.loads((run_dir / "result.json").read_text())["step"] == 1
    # The same labels resume.
    assert finetune(run_dir, encoder_run, *common, "train.steps=2") == 0


def test_a_run_directory_of_the_other_kind_is_refused_naming_it(encoder_run, single_process,
                                                                 tmp_path, capsys):
    """Fine-tuning into a pre-training run's directory, or the reverse, resumed its checkpoint:
    refused with a model-shape diff of task fields, or megatron-core's 'Cannot merge two lists'."""
    task = ["--no-evaluate", "task.builtin=topic", "task.epochs=null", "train.steps=1"]
    pretraining = tmp_path / "pretraining"
    shutil.copytree(encoder_run, pretraining)
    assert finetune(pretraining, encoder_run, *task) == 2
    assert "holds a pre-training checkpoint" in capsys.readouterr().err
    finetuned = tmp_path / "finetuned"
    assert finetune(finetuned, encoder_run, *task) == 0
    capsys.readouterr()
    assert cli.main(["pretrain", "--config", str(encoder_run / "config.yaml"), "--run-dir",
                     str(finetuned), "train.steps=2"]) == 2
    assert "holds a fine-tuning checkpoint (task classification)" in capsys.readouterr().err


def test_a_run_with_nothing_held_back_trains_and_says_there_is_nothing_to_score(
        encoder_run, single_process, tmp_path, capsys):
    """task.split=100,0,0 and no validation or test file: scoring crashed in sacrebleu or the
    metrics on no examples (an IndexError after the whole training)."""
    data = tmp_path / "all.jsonl"
    data.write_text("".join(json.dumps({"text": f"text {i}", "label": "ab"[i % 2]}) + "\n"
                            for i in range(20)))
    run_dir = tmp_path / "run"
    assert finetune(run_dir, encoder_run, "--task-kind", "classification", "--train-file",
                    str(data), "task.split=100,0,0", "task.epochs=null", "train.steps=1") == 0
    said = "".join(capsys.readouterr())
    assert "nothing to score" in said and "--test-file" in said, said
    assert not (run_dir / "eval.json").exists()
    assert cli.main(["evaluate", "--run", str(run_dir)]) == 2
    error = capsys.readouterr().err
    assert "nothing to score" in error and "Traceback" not in error
    assert cli.main(["evaluate", "--run", str(run_dir), "--test-file", str(data)]) == 0


@pytest.mark.parametrize("setting, says", [
    ("task.generation.max_new_tokens=100000", "model.max_position_embeddings"),
    ("task.generation.length_penalty=nan", "length_penalty"),
    ("task.eval_examples=-1", "eval_examples"), ("task.epochs=nan", "epochs"),
    ("task.epochs=inf", "epochs")])
def test_settings_that_would_fail_late_are_refused_before_training(
        setting, says, t5_run, single_process, tmp_path, capsys):
    data = tmp_path / "copy.jsonl"
    data.write_text("".join(json.dumps({"source": f"word {i}", "target": f"word {i}"}) + "\n"
                            for i in range(20)))
    run_dir = tmp_path / "run"
    assert finetune(run_dir, t5_run, "--task-kind", "seq2seq", "--train-file", str(data),
                    "task.epochs=null", "train.steps=1", setting) == 2
    error = capsys.readouterr().err
    assert says in error and setting.split("=")[0] in error, error
    assert not run_dir.exists()
