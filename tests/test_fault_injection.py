"""Fault injection: full disks (a small real tmpfs; skipped where it cannot be mounted) under
preprocessing, tokenizer training (its output, and TMPDIR holding a piped input) and checkpoint
writing; SIGKILL at random points of
checkpoint writing and of preprocessing. After each: the previous good state loads, nothing
stale is left (or the next run removes it), and the message is one line naming the path."""

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_seqpt.config import dump
from megatron_seqpt.training import checkpoint as ckpt
from tests.raw_corpus import CORPUS, tokenizer_model
from tests.run_configs import tiny_config

ROOT = Path(__file__).resolve().parents[1]
ENV = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}


@pytest.fixture
def small_disk(tmp_path):
    """``make(size)``: a directory on a tmpfs of that size, unmounted afterwards."""
    mounts = []

    def make(size: str, options: str = "") -> Path:
        where = tmp_path / f"disk{len(mounts)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"{options}size={size}", "tmpfs",
                               str(where)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'})")
        mounts.append(where)
        return where

    yield make
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(disk: Path, leave_bytes: int) -> None:
    """Take all of the disk's free space but ``leave_bytes``."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(disk / "filler", "wb") as filler:
        filler.write(b"\0" * max(0, free - leave_bytes))


def _one_line_error(stderr: str, path_part: str,
                    cause: str = "No space left on device (ENOSPC)") -> None:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if ": error: " in line]
    assert len(lines) == 1, stderr
    assert cause in lines[0] and path_part in lines[0], stderr


def _tool(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / name), *args, "--quiet"],
                          capture_output=True, text=True, env=ENV, timeout=300)


def test_preprocessing_on_a_full_disk_fails_in_one_line_and_leaves_nothing(small_disk):
    disk = small_disk("96k")
    done = _tool("preprocess_data.py", "--input", str(CORPUS), "--output-prefix",
                 str(disk / "x"), "--tokenizer-model", str(tokenizer_model()))
    assert done.returncode == 2, done.stderr
    _one_line_error(done.stderr, str(disk))
    assert list(disk.iterdir()) == []


def test_a_read_only_output_is_one_line_for_every_writer(small_disk, tmp_path):
    disk = small_disk("1m", "ro,")
    read_only = "Read-only file system (EROFS)"
    for tool, args in (("preprocess_data.py", ["--tokenizer-model", str(tokenizer_model())]),
                       ("train_tokenizer.py", ["--vocab-size", "2000"])):
        done = _tool(tool, "--input", str(CORPUS), "--output-prefix", str(disk / "x"), *args)
        assert done.returncode == 2, done.stderr
        _one_line_error(done.stderr, str(disk), read_only)
    config = tmp_path / "config.yaml"
    dump(tiny_config("encoder", tmp_path / "cache", ["train.steps=1"]), config)
    done = subprocess.run([sys.executable, "-m", "megatron_seqpt.cli", "pretrain", "--config",
                           str(config), "--run-dir", str(disk / "run")],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 1, done.stderr
    _one_line_error(done.stderr, str(disk / "run"), read_only)


def test_tokenizer_training_on_a_full_disk_keeps_the_old_model_and_vocab(small_disk):
    disk = small_disk("1m")
    old = {suffix: f"old {suffix}".encode() for suffix in (".model", ".vocab")}
    for suffix, content in old.items():
        (disk / f"tok{suffix}").write_bytes(content)
    _fill(disk, leave_bytes=24 * 1024)  # the new .vocab fits, the .model beside it does not
    done = _tool("train_tokenizer.py", "--input", str(CORPUS), "--vocab-size", "2000",
                 "--output-prefix", str(disk / "tok"))
    assert done.returncode == 2, done.stderr
    _one_line_error(done.stderr, str(disk / "tok"))
    assert {p.name for p in disk.iterdir()} == {"tok.model", "tok.vocab", "filler"}
    for suffix, content in old.items():
        assert (disk / f"tok{suffix}").read_bytes() == content


def test_a_piped_tokenizer_input_that_does_not_fit_in_tmpdir_fails_in_one_line(small_disk,
                                                                             tmp_path):
    disk = small_disk("96k")  # TMPDIR: the copy of the piped corpus (232 KB) does not fit
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools/train_tokenizer.py"), "--input", "/dev/stdin",
         "--vocab-size", "2000", "--output-prefix", str(tmp_path / "tok"), "--quiet"],
        input=CORPUS.read_text(encoding="utf-8"), capture_output=True, text=True,
        env={**ENV, "TMPDIR": str(disk)}, timeout=300)
    assert done.returncode == 2, done.stderr
    _one_line_error(done.stderr, str(disk))
    assert "/dev/stdin" in done.stderr and "TMPDIR" in done.stderr
    assert list(disk.iterdir()) == [] and list(tmp_path.glob("tok*")) == []


def test_a_checkpoint_that_does_not_fit_keeps_the_last_good_one(small_disk, tmp_path):
    disk = small_disk("64m")
    config = tmp_path / "config.yaml"
    dump(tiny_config("encoder", tmp_path / "cache",
                     ["train.steps=4", "checkpoint.save_interval=2", "checkpoint.keep_last=0",
                      "train.eval_interval=100", "logging.tensorboard=false"]), config)
    command = [sys.executable, "-m", "megatron_seqpt.cli", "pretrain", "--config", str(config),
               "--run-dir", str(disk / "run")]
    first = subprocess.run(command + ["train.steps=2"], capture_output=True, text=True,
                           env=ENV, timeout=300)
    assert first.returncode == 0, first.stderr
    size = sum(p.stat().st_size for p in (disk / "run" / "checkpoints").rglob("*")
               if p.is_file())
    _fill(disk, leave_bytes=size // 2)
    second = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert second.returncode != 0
    _one_line_error(second.stderr, str(disk / "run"))
    root = disk / "run" / "checkpoints"
    assert ckpt.resolve(disk / "run").name == "step_0000002"  # verified by its checksums
    assert not list(root.glob("*.partial"))
    (disk / "filler").unlink()
    again = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert again.returncode == 0, again.stderr
    assert json.loads((disk / "run" / "result.json").read_text())["step"] == 4


def _assert_all_end(processes: list[psutil.Process], seconds: float = 20) -> None:
    """The processes a killed run had started end with it (each one left holds memory)."""
    _, alive = psutil.wait_procs(processes, timeout=seconds)
    left = []
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            left.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
            process.kill()
    assert not left, f"children outlived the killed run: {left}"


def test_sigkill_at_random_points_of_checkpoint_writing_loses_nothing(tmp_path):
    """Three kills at random moments (seeded) of a run that saves every step, each followed
    by the same command, which must resume from a verified checkpoint; then it completes.
    The processes the run had started (megatron-core's checkpoint helpers) end with it."""
    config = tmp_path / "config.yaml"
    dump(tiny_config("encoder", tmp_path / "cache",
                     ["train.steps=100000", "checkpoint.save_interval=1", "checkpoint.keep_last=2",
                      "train.eval_interval=100000", "logging.tensorboard=false"]), config)
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "megatron_seqpt.cli", "pretrain", "--config", str(config),
               "--run-dir", str(run_dir)]
    root = run_dir / "checkpoints"
    rng = random.Random(1234)
    step = 0
    for kill in range(3):
        log = tmp_path / f"run{kill}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=ENV)
        deadline = time.time() + 180
        while not (root / "latest").exists() or ckpt.resolve(run_dir).name == \
                ckpt.step_dir_name(step):  # past the checkpoint it resumed from
            assert proc.poll() is None and time.time() < deadline, log.read_text()
            time.sleep(0.05)
        # Every step saves: a random moment from here falls in or between checkpoint writes.
        time.sleep(rng.uniform(0.0, 2.0))
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        _assert_all_end(children)
        output = log.read_text()
        if kill:
            assert f"at step {step}" in output, output  # it had resumed
        step = int(ckpt.resolve(run_dir).name.split("_")[1])  # newest published, verified
    again = subprocess.run(command + [f"train.steps={step + 1}"], capture_output=True,
                           text=True, env=ENV, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"at step {step}" in again.stdout
    assert not list(root.glob("*.partial"))
    assert json.loads((run_dir / "result.json").read_text())["step"] == step + 1


def test_stale_temporaries_of_dead_processes_are_swept_and_live_ones_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    host = socket.gethostname()
    try:
        prefix = "x_en_text_document"
        left = [out / f"{prefix}.tmp-{host}-{dead.pid}.bin",
                out / f"{prefix}.tmp-{dead.pid}.idx"]  # also the older naming
        kept = [out / f"{prefix}.tmp-{host}-{alive.pid}.bin",
                out / f"{prefix}.tmp-otherhost-{dead.pid}.bin"]  # another host's process
        for path in left + kept:
            path.write_bytes(b"partial")
        done = _tool("preprocess_data.py", "--input", str(CORPUS), "--output-prefix",
                     str(out / "x"), "--tokenizer-model", str(tokenizer_model()))
        assert done.returncode == 0, done.stderr
        assert not any(path.exists() for path in left)
        assert all(path.exists() for path in kept)
        assert (out / f"{prefix}.bin").stat().st_size > 0
    finally:
        alive.kill()


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_during_preprocessing_leaves_only_temporaries_the_next_run_removes(seed,
                                                                                    tmp_path):
    out = tmp_path / "out"
    big = tmp_path / "big.jsonl"
    big.write_bytes(CORPUS.read_bytes() * 12)
    tool = [sys.executable, str(ROOT / "tools/preprocess_data.py"), "--input", str(big),
            "--output-prefix", str(out / "x"), "--tokenizer-model", str(tokenizer_model()),
            "--quiet"]
    proc = subprocess.Popen(tool, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    deadline = time.time() + 120
    while not any(".tmp-" in p.name for p in out.glob("*")):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.02)
    time.sleep(random.Random(seed).uniform(0.0, 1.5))  # a random point of the writing
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    names = {p.name for p in out.iterdir()}
    published = {n for n in names if ".tmp-" not in n}
    # Published outputs come in complete pairs (a kill during the final renames can leave some
    # languages published and others not); the rest are temporaries.
    for name in published:
        stem = name.rsplit(".", 1)[0]
        assert {f"{stem}.bin", f"{stem}.idx"} <= published, names
        assert IndexedDataset(str(out / stem)).sequence_lengths.size > 0
    done = subprocess.run(tool, capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
