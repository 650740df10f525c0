"""The training loop on real data with tiny models: losses fall, resume is exact, pre-emption
and interrupted checkpoints are safe, bad input is refused before training starts."""

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import psutil
import pytest
import torch
from megatron.core import dist_checkpointing
from megatron.core.dist_checkpointing.strategies import filesystem_async

from megatron_seqpt.errors import UserError
from megatron_seqpt.training import checkpoint as ckpt
from megatron_seqpt.training import optimizer_state
from megatron_seqpt.training.loop import Trainer
from megatron_seqpt.training.metrics import read_metrics
from megatron_seqpt.training.preemption import PreemptionHandler
from tests.run_configs import tiny_config


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def train_losses(run_dir: Path, split: str = "train") -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl")
            if r.get("split", "train") == split}


def parameters(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.modules[0].named_parameters()}


@pytest.mark.parametrize("kind", ["encoder", "t5"])
def test_tiny_model_validation_loss_falls(kind, single_process, cache_dir, tmp_path):
    config = tiny_config(kind, cache_dir, ["train.steps=40", "train.eval_interval=20",
                                           "logging.log_interval=10"])
    ctx = single_process.initialize(config.parallel, config.model, config.train.seed)
    result = Trainer(config, tmp_path, ctx).run()
    valid = train_losses(tmp_path, "valid")
    assert result.status == "completed" and result.step == 40
    assert sorted(valid) == [0, 20, 40]
    assert valid[0] > valid[20] > valid[40] and valid[40] < valid[0] - 0.5, valid
    records = read_metrics(tmp_path / "metrics.jsonl")
    for key in ("step", "loss", "lr", "grad_norm", "tokens_per_s", "consumed_tokens"):
        assert key in records[-2] or key in records[-1], key
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_0000040"
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "completed"


def test_resume_equals_uninterrupted_run(single_process, cache_dir, tmp_path):
    """Steps 4-6 after resuming from the step-3 checkpoint equal those of the straight run,
    with dropout on (so the RNG state must be restored too)."""
    overrides = ["train.steps=6", "checkpoint.save_interval=3", "checkpoint.keep_last=0",
                 "train.eval_interval=2", "model.hidden_dropout=0.1",
                 "data.loader_workers=1"]  # prefetching must not move the saved position
    config = tiny_config("t5", cache_dir, overrides)
    ctx = single_process.initialize(config.parallel, config.model, config.train.seed)
    straight = Trainer(config, tmp_path / "straight", ctx)
    straight.run()
    final = parameters(straight)

    resumed_dir = tmp_path / "resumed"
    (resumed_dir / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "straight/checkpoints/step_0000003",
                    resumed_dir / "checkpoints/step_0000003")
    (resumed_dir / "checkpoints/latest").write_text("step_0000003\n")
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        resumed = Trainer(config, resumed_dir, ctx)
    assert resumed.state.step == 3
    # Loading says nothing a user could act on (megatron-core's and torch's deprecations).
    assert not [str(w.message) for w in shown if issubclass(w.category, FutureWarning)]
    # On the CPU, torch's fused Adam kernel, before and after loading the saved state.
    assert all(group["fused"] for trainer in (straight, resumed)
               for part in optimizer_state.parts(trainer.opt.optimizer)
               for group in part.optimizer.param_groups)
    result = resumed.run()
    assert result.step == 6
    expected = train_losses(tmp_path / "straight")
    got = train_losses(resumed_dir)
    assert [got[s] for s in (4, 5, 6)] == [expected[s] for s in (4, 5, 6)]
    for name, value in parameters(resumed).items():
        assert torch.equal(value, final[name]), name


def test_saving_starts_no_process_that_outlives_it(single_process, cache_dir, tmp_path):
    """megatron-core's writer hands its results back in this process: no spawned manager
    (seconds of torch import at the first save, then serving on after it)."""
    config = tiny_config("encoder", cache_dir, ["train.steps=1", "checkpoint.save_interval=1"])
    ctx = single_process.initialize(config.parallel, config.model, config.train.seed)
    Trainer(config, tmp_path, ctx).run()
    assert ckpt.resolve(tmp_path).name == "step_0000001"
    spawned = [" ".join(child.cmdline()) for child in psutil.Process().children(recursive=True)
               if "multiprocessing.spawn" in " ".join(child.cmdline())]
    assert spawned == []


def test_a_save_takes_no_results_an_interrupted_save_left(single_process, cache_dir, tmp_path):
    """A save interrupted after megatron-core's writer queued its results and before they were
    collected leaves them queued; the next save must collect its own."""
    config = tiny_config("encoder", cache_dir, ["train.steps=2", "checkpoint.save_interval=1"])
    ctx = single_process.initialize(config.parallel, config.model, config.train.seed)
    straight = Trainer(config, tmp_path / "run", ctx)
    filesystem_async._results_queue = queue.Queue()
    filesystem_async._results_queue.put({0: []})  # left over: one worker's, naming no file
    straight.run()
    final = parameters(straight)
    resumed = Trainer(config, tmp_path / "run", ctx)
    assert resumed.state.step == 2
    for name, value in parameters(resumed).items():
        assert torch.equal(value, final[name]), name


def test_interrupted_checkpoint_leaves_previous_latest(single_process, cache_dir, tmp_path,
                                                      monkeypatch):
    config = tiny_config("encoder", cache_dir, ["train.steps=4", "checkpoint.save_interval=2",
                                                "train.eval_interval=100"])
    ctx = single_process.initialize(config.parallel, config.model, config.train.seed)
    real_save = dist_checkpointing.save
    calls = []

    def dies_during_second_save(state, directory, **kwargs):
        calls.append(directory)
        if len(calls) == 2:
            real_save(state, directory, **kwargs)  # files written, never published
            raise KeyboardInterrupt("killed while writing the checkpoint")
        return real_save(state, directory, **kwargs)

    monkeypatch.setattr(dist_checkpointing, "save", dies_during_second_save)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, tmp_path, ctx).run()
    monkeypatch.undo()
    root = tmp_path / "checkpoints"
    assert (root / "latest").read_text().strip() == "step_0000002"
    assert not (root / "step_0000004.partial").exists()  # the aborted save cleaned up
    # A save killed outright (SIGKILL) cannot clean up: the next start removes what it left.
    (root / "step_0000004.partial").mkdir()
    resumed = Trainer(config, tmp_path, ctx)
    assert resumed.state.step == 2
    assert not (root / "step_0000004.partial").exists()
    assert resumed.run().step == 4


def test_non_finite_loss_is_skipped_then_stops_with_checkpoint(single_process, cache_dir,
                                                               tmp_path):
    config = tiny_config("encoder", cache_dir, ["train.steps=30", "optim.lr=1e30",
                                                "optim.warmup_steps=0", "train.max_skipped_steps=3",
                                                "train.eval_interval=100"])
    ctx = single_process.initialize(config.parallel, config.model, config.train.seed)
    result = Trainer(config, tmp_path, ctx).run()
    assert result.status == "diverged"
    skipped = [r for r in read_metrics(tmp_path / "metrics.jsonl")
               if r.get("event") == "skipped non-finite loss"]
    assert len(skipped) == 3
    assert result.step == skipped[-1]["step"] < 30
    assert ckpt.resolve(tmp_path).name == f"step_{result.step:07d}"


def test_bad_inputs_are_refused_before_training(single_process, cache_dir, tmp_path):
    config = tiny_config("encoder", cache_dir, ["train.steps=2"])
    ctx = single_process.initialize(config.parallel, config.model, config.train.seed)
    with pytest.raises(UserError, match="model.vocab_size is 123 but the tokenizer"):
        Trainer(tiny_config("encoder", cache_dir, ["model.vocab_size=123"]), tmp_path / "a", ctx)
    with pytest.raises(UserError, match="data.prefixes.xx: .*missing_en.bin does not exist"):
        bad = tiny_config("encoder", cache_dir)
        bad.data.prefixes = {"xx": str(tmp_path / "missing_en")}
        Trainer(bad, tmp_path / "b", ctx)
    Trainer(config, tmp_path / "small", ctx).run()
    other = tiny_config("encoder", cache_dir, ["model.hidden_size=32",
                                               f"checkpoint.load={tmp_path / 'small'}"])
    with pytest.raises(ckpt.CheckpointError, match="model.hidden_size: checkpoint 64, config 32"):
        Trainer(other, tmp_path / "c", ctx)
    assert not (tmp_path / "c" / "metrics.jsonl").exists()


def test_cli_refuses_layout_that_does_not_fit(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "megatron_seqpt.cli", "pretrain", "--run-dir", str(tmp_path),
         "parallel.tensor_model_parallel_size=2"], capture_output=True, text=True,
        env={**os.environ, "RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
             "MASTER_PORT": "29999"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "world size 1 is not divisible" in result.stderr


def test_a_run_on_prepared_data_never_loads_the_sentence_splitter(cache_dir, tmp_path):
    """nltk (which loads scipy) adds over a second to the start of every process, each rank
    of a job included; a run whose data is prepared never splits sentences."""
    from megatron_seqpt.config import dump

    dump(tiny_config("encoder", cache_dir, ["train.steps=1"]), tmp_path / "config.yaml")
    result = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom megatron_seqpt import cli\n"
         f"code = cli.main(['pretrain', '--config', '{tmp_path / 'config.yaml'}', "
         f"'--run-dir', '{tmp_path / 'run'}'])\n"
         "print('exit', code, 'nltk' in sys.modules)"],
        capture_output=True, text=True, env={k: v for k, v in os.environ.items()
                                             if k not in ("RANK", "WORLD_SIZE")})
    assert result.stdout.splitlines()[-1] == "exit 0 False", result.stdout + result.stderr


def test_cli_refuses_a_short_decoder_before_preparing_any_data(tmp_path):
    cache = tmp_path / "cache"
    result = subprocess.run(
        [sys.executable, "-m", "megatron_seqpt.cli", "pretrain", "--run-dir", str(tmp_path / "r"),
         "model.kind=t5", "data.decoder_seq_length=10", f"data.cache_dir={cache}"],
        capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "data.decoder_seq_length 10 is too short" in result.stderr
    assert not cache.exists() or not any(cache.rglob("*.model"))  # no tokenizer was trained
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("vocab_size, says", [(4000, "is too large for this corpus"),
                                               (100, "leaves no room for text pieces")])
def test_a_vocabulary_that_does_not_fit_the_corpus_names_the_config_key(vocab_size, says,
                                                                        tmp_path):
    """The tokenizer's own errors name its command's flags; a run sets the size with
    data.vocab_size, and has no sentinel flag to lower."""
    corpus = tmp_path / "small.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"Sentence {i} is here. Another follows.",
                                          "lang": "en"}) + "\n" for i in range(40)))
    result = subprocess.run(
        [sys.executable, "-m", "megatron_seqpt.cli", "pretrain", "--run-dir", str(tmp_path / "r"),
         f"data.corpus=[{corpus}]", f"data.vocab_size={vocab_size}",
         f"data.cache_dir={tmp_path / 'cache'}"],
        capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")})
    assert result.returncode == 2, result.stdout + result.stderr
    error = result.stderr.splitlines()[-1]
    assert says in error and "data.vocab_size" in error and "--" not in error, error


def _restore_ctrl_c() -> None:
    """Started from a background test run, the child would inherit Ctrl-C as ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _pretrain_arguments(cache_dir: Path, tmp_path: Path, overrides: list[str]
                        ) -> tuple[list[str], Path, dict[str, str]]:
    """The command's arguments for a tiny encoder run in ``tmp_path``, its run directory and
    an environment without launcher variables (the run is a world of one)."""
    from megatron_seqpt.config import dump

    config_path = tmp_path / "config.yaml"
    dump(tiny_config("encoder", cache_dir, overrides), config_path)
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    return ["pretrain", "--config", str(config_path), "--run-dir", str(run_dir)], run_dir, env


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_preemption_signal_checkpoints_and_exits_zero(stop, cache_dir, tmp_path):
    arguments, run_dir, env = _pretrain_arguments(
        cache_dir, tmp_path, ["train.steps=100000", "train.eval_interval=100000",
                              "checkpoint.save_interval=100000"])
    command = [sys.executable, "-m", "megatron_seqpt.cli", *arguments]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, preexec_fn=_restore_ctrl_c)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (
            metrics.exists() and len(train_losses(run_dir)) >= 3):
        time.sleep(0.2)
    proc.send_signal(stop)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "preempted"
    stopped_at = result["step"]
    assert ckpt.resolve(run_dir).name == f"step_{stopped_at:07d}"

    # The same command resumes; a smaller train.steps ends it right away.
    again = subprocess.run(command + [f"train.steps={stopped_at + 1}"], capture_output=True,
                           text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"at step {stopped_at}" in again.stdout
    assert json.loads((run_dir / "result.json").read_text())["step"] == stopped_at + 1


def test_second_ctrl_c_aborts_without_a_checkpoint(cache_dir, tmp_path):
    arguments, run_dir, env = _pretrain_arguments(
        cache_dir, tmp_path, ["train.steps=100000", "train.eval_interval=100000",
                              "checkpoint.save_interval=100000"])
    proc = subprocess.Popen([sys.executable, "-m", "megatron_seqpt.cli", *arguments],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=_restore_ctrl_c)
    deadline = time.time() + 120
    while time.time() < deadline and not (
            (run_dir / "metrics.jsonl").exists() and len(train_losses(run_dir)) >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "Ctrl-C again to abort" in output and "Traceback" not in output
    assert not list((run_dir / "checkpoints").glob("step_*"))


# Run as a script: both Ctrl-Cs land inside an at-fork callback of the checkpoint writer's forks,
# where CPython drops (and prints) an exception the signal handler raises, as seen in CI where
# the second Ctrl-C hit logging's at-fork lock release.
_CTRL_C_TWICE_DURING_A_FORK = """
import os, signal, sys
from megatron_seqpt import cli

def in_a_checkpoint_save():
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code.co_name == "save" and frame.f_code.co_filename.endswith("checkpoint.py"):
            return True
        frame = frame.f_back
    return False

def press_ctrl_c_twice():
    if in_a_checkpoint_save():
        signal.raise_signal(signal.SIGINT)
        print("second Ctrl-C in a fork of the checkpoint writer", flush=True)
        signal.raise_signal(signal.SIGINT)

os.register_at_fork(after_in_parent=press_ctrl_c_twice)
sys.exit(cli.main(sys.argv[1:]))
"""


def test_second_ctrl_c_aborts_even_where_python_drops_its_exception(cache_dir, tmp_path):
    arguments, run_dir, env = _pretrain_arguments(
        cache_dir, tmp_path, ["train.steps=4", "train.eval_interval=100",
                              "checkpoint.save_interval=2"])
    done = subprocess.run([sys.executable, "-c", _CTRL_C_TWICE_DURING_A_FORK, *arguments],
                          capture_output=True, text=True, env=env, timeout=300,
                          preexec_fn=_restore_ctrl_c)
    output = done.stdout + done.stderr
    assert "second Ctrl-C in a fork" in output  # the situation under test did arise
    assert done.returncode == 130, output
    assert "interrupted" in output and "Traceback" not in output
    assert not list((run_dir / "checkpoints").glob("step_*")), output


def test_a_dropped_second_ctrl_c_still_ends_the_step_loop(single_process, cache_dir):
    config = tiny_config("encoder", cache_dir)
    single_process.initialize(config.parallel, config.model, config.train.seed)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # ignored in background
    try:
        with PreemptionHandler() as preemption:
            signal.raise_signal(signal.SIGINT)
            assert preemption.requested(torch.device("cpu"))  # the first: checkpoint and stop
            with contextlib.suppress(KeyboardInterrupt):  # dropped, as in an at-fork callback
                signal.raise_signal(signal.SIGINT)
            with pytest.raises(KeyboardInterrupt):
                preemption.requested(torch.device("cpu"))
    finally:
        signal.signal(signal.SIGINT, before)


def saving_config(cache_dir: Path, *, steps: int, save_interval: int, keep_last: int):
    return tiny_config("encoder", cache_dir, [f"train.steps={steps}",
                                              f"checkpoint.save_interval={save_interval}",
                                              f"checkpoint.keep_last={keep_last}",
                                              "train.eval_interval=100"])


def test_broken_latest_pointer_is_refused_and_nothing_is_lost(single_process, cache_dir,
                                                              tmp_path):
    """A `latest` naming a missing checkpoint, or checkpoints without a `latest`, must not
    restart the run from scratch (which rewrites metrics.jsonl and prunes the checkpoints)."""
    config = saving_config(cache_dir, steps=4, save_interval=2, keep_last=1)
    ctx = single_process.initialize(config.parallel, config.model, config.train.seed)
    Trainer(config, tmp_path, ctx).run()
    root = tmp_path / "checkpoints"
    metrics = (tmp_path / "metrics.jsonl").read_bytes()
    (root / "latest").write_text("step_0000009\n")
    with pytest.raises(UserError, match="latest.*step_0000009"):
        Trainer(config, tmp_path, ctx)
    (root / "latest").unlink()
    with pytest.raises(UserError, match="step_0000004.*latest"):
        Trainer(config, tmp_path, ctx)
    assert (tmp_path / "metrics.jsonl").read_bytes() == metrics
    assert (root / "step_0000004" / "metadata.json").is_file()


def test_pruning_never_deletes_checkpoints_newer_than_the_one_written(single_process,
                                                                      cache_dir, tmp_path):
    """Pointed back at an older checkpoint, a run keeps the newer ones it did not write, and
    steps past 9,999,999 sort by number, not by name."""
    config = saving_config(cache_dir, steps=3, save_interval=1, keep_last=0)
    ctx = single_process.initialize(config.parallel, config.model, config.train.seed)
    Trainer(config, tmp_path, ctx).run()
    root = tmp_path / "checkpoints"
    shutil.copytree(root / "step_0000003", root / ckpt.step_dir_name(10_000_000))
    (root / "latest").write_text("step_0000001\n")
    config = saving_config(cache_dir, steps=2, save_interval=1, keep_last=1)
    assert Trainer(config, tmp_path, ctx).run().step == 2
    assert (root / "latest").read_text().strip() == "step_0000002"
    left = sorted(p.name for p in root.glob("step_*"))
    assert left == ["step_0000002", "step_0000003", "step_10000000"], left


def _inject(trainer: Trainer, faults: dict[int, str]) -> None:
    """Make the given optimizer steps (1-based) see a non-finite loss or gradient, as an
    overflowing bf16 step does."""
    real = trainer.forward_backward
    calls = []

    def faulty():
        losses = real()
        calls.append(1)
        fault = faults.get(len(calls))
        if fault == "loss":
            losses = {**losses, "lm loss": float("nan")}
        elif fault == "grad":
            param = next(p for p in trainer.modules[0].parameters() if p.requires_grad)
            param.main_grad.view(-1)[0] = float("inf")
        return losses

    trainer.forward_backward = faulty


def test_non_finite_gradients_with_a_finite_loss_are_not_applied(single_process, cache_dir,
                                                                  tmp_path):
    config = tiny_config("encoder", cache_dir, ["train.steps=4", "train.eval_interval=100"])
    ctx = single_process.initialize(config.parallel, config.model, config.train.seed)
    trainer = Trainer(config, tmp_path, ctx)
    _inject(trainer, {3: "grad"})
    assert trainer.run().status == "completed"
    events = {r["step"]: r.get("event") for r in read_metrics(tmp_path / "metrics.jsonl")
              if "split" not in r}
    assert events[3] == "skipped non-finite gradients" and events[4] is None, events
    assert all(torch.isfinite(p).all() for p in parameters(trainer).values())


def test_skipped_steps_keep_the_lr_schedule_on_the_step_count(single_process, cache_dir,
                                                              tmp_path):
    """The LR (warm-up, decay, group warm-ups) follows the step count whether or not a step
    was skipped: after two skipped steps it is the uninterrupted run's."""
    config = tiny_config("encoder", cache_dir, ["train.steps=8", "optim.warmup_steps=4",
                                                "train.eval_interval=100"])
    ctx = single_process.initialize(config.parallel, config.model, config.train.seed)
    Trainer(config, tmp_path / "straight", ctx).run()
    trainer = Trainer(config, tmp_path / "skipped", ctx)
    _inject(trainer, {1: "loss", 2: "loss"})
    trainer.run()

    def lrs(run_dir):
        return {r["step"]: r["lr"] for r in read_metrics(run_dir / "metrics.jsonl")
                if "split" not in r}
    assert lrs(tmp_path / "skipped") == lrs(tmp_path / "straight")


def test_extending_a_run_keeps_the_order_of_the_samples_it_was_planned_with(
        single_process, cache_dir, tmp_path):
    """Raising train.steps on resume: the sample count fed megatron-core's shuffle, so the run
    must keep the order its checkpoint's position points into, and draw the extra samples
    afresh rather than wrap around to the ones already seen."""
    config = tiny_config("encoder", cache_dir, ["train.steps=4", "train.eval_interval=100"])
    ctx = single_process.initialize(config.parallel, config.model, config.train.seed)
    first = Trainer(config, tmp_path, ctx)
    planned = 4 * config.train.global_batch_size
    # The sample stream under the step's padding trimming (data/trimming.py).
    dataset = first.data.train.stream.dataset
    drawn = len(dataset)  # megatron-core may draw a few more than asked
    seen = [dataset[i]["text"] for i in range(drawn)]
    first.run()
    # Far enough to take several epochs of some languages' data: megatron-core then shuffles
    # over more epochs, and a dataset built for the new count has another order.
    longer = tiny_config("encoder", cache_dir, ["train.steps=400", "train.eval_interval=100"])
    extended = Trainer(longer, tmp_path, ctx)
    stream = extended.data.train.stream
    assert extended.state.step == 4 and stream.consumed_samples == planned
    dataset = stream.dataset
    assert len(dataset) >= drawn + 396 * config.train.global_batch_size
    for i in range(drawn):
        assert (dataset[i]["text"] == seen[i]).all(), i
    fresh = [dataset[drawn + i]["text"] for i in range(planned)]
    assert sum((a == b).all() for a, b in zip(fresh, seen)) < planned // 2
    extended.train_step()
    extended.save_checkpoint()
    assert ckpt.content_metadata(ckpt.resolve(tmp_path))["train_samples"] == \
        [planned, 396 * config.train.global_batch_size]
