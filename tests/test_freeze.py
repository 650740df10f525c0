"""The freeze scheduler on a warm-started T5: frozen groups hold still and cost no optimizer
state, they train once unfrozen, and a run resumed before, at or after the unfreeze step is the
uninterrupted run."""

import shutil

import pytest
import torch

from megatron_seqpt.training.loop import Trainer
from megatron_seqpt.training.metrics import read_metrics
from tests.recipe_runs import trained
from tests.run_configs import tiny_config

UNFREEZE_AT = 4
FREEZE = [f"freeze.{group}.{key}" for group in ("embeddings", "encoder") for key in (
    "frozen=true", f"unfreeze_at_step={UNFREEZE_AT}", "warmup_steps=2")]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def warm_config(encoder_run, cache_dir, overrides=()):
    return tiny_config("t5", cache_dir, ["train.steps=8", f"init.from_encoder={encoder_run}",
                                         "model.hidden_dropout=0.1", *FREEZE, *overrides])


def frozen_params(trainer):
    return {n: p for n, p in trainer.modules[0].named_parameters()
            if n.startswith(("embedding.", "encoder."))}


def test_frozen_groups_hold_still_then_train(single_process, recipe_root, cache_dir, tmp_path):
    encoder_run = trained("encoder", recipe_root)
    source = torch.load(encoder_run / "weights.pt")
    config = warm_config(encoder_run, cache_dir)
    trainer = Trainer(config, tmp_path, single_process.initialize(
        config.parallel, config.model, config.train.seed))
    params = frozen_params(trainer)
    for name, param in params.items():
        assert torch.equal(param, source[name]), name  # warm-started from the encoder
    trained_groups, flops = [], []
    for step in range(1, 9):
        record = trainer.train_step()
        trained_groups.append(record["trainable"])
        flops.append(record["flops"])
        optimized = {id(p) for g in trainer.opt.optimizer.param_groups for p in g["params"]}
        if step <= UNFREEZE_AT:
            for name, param in params.items():
                assert torch.equal(param, source[name]), (step, name)
                assert not param.requires_grad and not hasattr(param, "main_grad"), name
                assert id(param) not in optimized, name  # no optimizer state
    assert trained_groups == ["decoder"] * UNFREEZE_AT + [
        "embeddings,encoder,decoder"] * (8 - UNFREEZE_AT)
    changed = [n for n, p in params.items() if not torch.equal(p, source[n])]
    assert len(changed) == len(params)
    # Frozen steps are accounted without the encoder's backward.
    frozen = {"embeddings": False, "encoder": False, "decoder": True, "heads": True}
    assert flops[:UNFREEZE_AT] == [sum(trainer.workload.flops.step(frozen).values())] * UNFREEZE_AT
    assert flops[UNFREEZE_AT:] == [trainer.workload.flops.full_step()] * (8 - UNFREEZE_AT)
    assert flops[0] < flops[-1]


@pytest.fixture(scope="module")
def straight_run(recipe_root, tmp_path_factory):
    """The uninterrupted warm-started run, checkpointed at every step."""
    from megatron_seqpt.runtime import distributed

    run_dir = tmp_path_factory.mktemp("straight")
    cache = tmp_path_factory.mktemp("straight-cache")
    config = warm_config(trained("encoder", recipe_root), cache,
                         ["checkpoint.save_interval=1", "checkpoint.keep_last=0",
                          "train.eval_interval=3"])
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    trainer = Trainer(config, run_dir, ctx)
    trainer.run()
    final = {n: p.detach().clone() for n, p in trainer.modules[0].named_parameters()}
    distributed.shutdown()
    return config, run_dir, final


@pytest.mark.parametrize("resume_at", [UNFREEZE_AT - 2, UNFREEZE_AT, UNFREEZE_AT + 2])
def test_resume_across_unfreeze_equals_uninterrupted(resume_at, straight_run, single_process,
                                                      tmp_path):
    config, straight_dir, final = straight_run
    name = f"step_{resume_at:07d}"
    (tmp_path / "checkpoints").mkdir()
    shutil.copytree(straight_dir / "checkpoints" / name, tmp_path / "checkpoints" / name)
    (tmp_path / "checkpoints" / "latest").write_text(name + "\n")
    trainer = Trainer(config, tmp_path, single_process.initialize(
        config.parallel, config.model, config.train.seed))
    assert trainer.state.step == resume_at
    trainer.run()

    def losses(run_dir):
        return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl")
                if "split" not in r and r["step"] > resume_at}

    assert losses(tmp_path) == losses(straight_dir)
    for name, param in trainer.modules[0].named_parameters():
        assert torch.equal(param, final[name]), name


def test_optimizer_rebuild_keeps_the_state(single_process, cache_dir, tmp_path):
    """Rebuilding DDP and optimizer (what an unfreeze does) with the same groups carries every
    parameter's Adam state over exactly: the run goes on as if nothing happened."""
    config = tiny_config("t5", cache_dir, ["train.steps=4", "model.hidden_dropout=0"])
    ctx = single_process.initialize(config.parallel, config.model, config.train.seed)
    plain = Trainer(config, tmp_path / "plain", ctx)
    plain_losses = [plain.train_step()["loss"] for _ in range(4)]
    rebuilt = Trainer(config, tmp_path / "rebuilt", ctx)
    losses = [rebuilt.train_step()["loss"] for _ in range(2)]
    rebuilt.set_trainable(dict(rebuilt.trainable))
    losses += [rebuilt.train_step()["loss"] for _ in range(2)]
    assert losses == plain_losses
    for (name, a), (_, b) in zip(plain.modules[0].named_parameters(),
                                 rebuilt.modules[0].named_parameters()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("beta2", [0.98, 0.999])
def test_first_updates_after_an_unfreeze_are_nominal_size(beta2, single_process, cache_dir,
                                                          tmp_path):
    """Newly trainable parameters start with zero Adam moments while the step count is the
    run's; left so, their updates grow to (1 - beta1^k) / sqrt(1 - beta2^k) times the LR (1.5x
    at beta2 0.98, 6x at 0.999, k steps in). They must get Adam's own start: about the LR per
    element from the first update on, as for parameters trained from step 1."""
    config = tiny_config("t5", cache_dir, [
        "train.steps=40", "optim.decay_style=constant", "optim.warmup_steps=0",
        f"optim.adam_beta2={beta2}", "optim.weight_decay=0", "model.hidden_dropout=0",
        "model.attention_dropout=0", "train.eval_interval=1000",
        "freeze.encoder.frozen=true", "freeze.encoder.unfreeze_at_step=30"])
    ctx = single_process.initialize(config.parallel, config.model, config.train.seed)
    trainer = Trainer(config, tmp_path, ctx)
    ratios = []
    while trainer.state.step < 38:
        before = {n: p.detach().clone() for n, p in trainer.modules[0].named_parameters()
                  if n.startswith("encoder.")}
        trainer.train_step()
        if trainer.state.step > 30:  # the steps after the unfreeze
            change = max((p.detach() - before[n]).abs().max().item()
                         for n, p in trainer.modules[0].named_parameters() if n in before)
            ratios.append(change / config.optim.lr)
    assert ratios[0] == pytest.approx(1.0, abs=0.05), ratios  # Adam's first step: lr x sign(g)
    assert max(ratios) < 1.3, ratios
