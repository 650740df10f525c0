"""The CUDA path (run where a GPU is present, skipped elsewhere): nccl, bf16, megatron-core's
DDP and distributed optimizer, checkpoints and resume."""

import shutil

import pytest
import torch

from megatron_seqpt.training.loop import Trainer
from megatron_seqpt.training.metrics import read_metrics
from tests.run_configs import tiny_config

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def losses(run_dir, split="train"):
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl")
            if r.get("split", "train") == split}


@pytest.mark.parametrize("kind", ["encoder", "t5"])
@pytest.mark.parametrize("distributed_optimizer", [False, True])
def test_bf16_training_on_gpu_learns_and_resumes(kind, distributed_optimizer, single_process,
                                                 cache_dir, tmp_path):
    config = tiny_config(kind, cache_dir, [
        "train.steps=40", "train.eval_interval=20", "checkpoint.save_interval=20",
        "checkpoint.keep_last=0", "model.hidden_dropout=0", "model.attention_dropout=0",
        f"parallel.use_distributed_optimizer={str(distributed_optimizer).lower()}"])
    ctx = single_process.initialize(config.parallel, config.model, config.train.seed)
    assert ctx.backend.cuda and torch.distributed.get_backend() == "nccl"
    straight = Trainer(config, tmp_path / "straight", ctx)
    assert straight.precision == "bf16"
    assert next(straight.modules[0].parameters()).device.type == "cuda"
    straight.run()
    valid = losses(tmp_path / "straight", "valid")
    assert valid[40] < valid[0] - 0.5, valid

    resumed_dir = tmp_path / "resumed" / "checkpoints"
    resumed_dir.mkdir(parents=True)
    shutil.copytree(tmp_path / "straight/checkpoints/step_0000020", resumed_dir / "step_0000020")
    (resumed_dir / "latest").write_text("step_0000020\n")
    resumed = Trainer(config, tmp_path / "resumed", ctx)
    assert resumed.state.step == 20
    resumed.run()
    expected, got = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    # CUDA kernels may reduce in another order from run to run: close, not bitwise.
    for step in (21, 30, 40):
        assert got[step] == pytest.approx(expected[step], rel=2e-2), step


def test_freeze_schedule_on_gpu_bf16(single_process, cache_dir, tmp_path):
    """The frozen-encoder path (no_grad encoder, bf16 hand-over to the decoder), the unfreeze
    rebuild of the distributed optimizer and the encoder-MLM variant, on CUDA."""
    freeze = [f"freeze.{group}.{key}" for group in ("embeddings", "encoder")
              for key in ("frozen=true", "unfreeze_at_step=10")]
    config = tiny_config("t5", cache_dir, ["train.steps=30", "train.eval_interval=15",
                                           "parallel.use_distributed_optimizer=true",
                                           "model.encoder_mlm_weight=0.5", *freeze])
    trainer = Trainer(config, tmp_path, single_process.initialize(
        config.parallel, config.model, config.train.seed))
    assert trainer.precision == "bf16"
    trainer.run()
    records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "split" not in r]
    assert [r["trainable"] for r in records[:10]] == ["decoder,heads"] * 10
    assert records[-1]["trainable"] == "embeddings,encoder,decoder,heads"
    valid = losses(tmp_path, "valid")
    assert valid[30] < valid[0] - 0.5, valid
