"""Parallel correctness on CPU over gloo: each layout, loaded from the single-process model's
checkpoint, gives the same loss and gradients on the same global batch (dropout off); and a
checkpoint written with one layout resumes under another."""

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
from megatron.core import dist_checkpointing
from megatron.core.dist_checkpointing.mapping import ShardedTensor

from tests.tolerance import assert_close_to_scale

NO_DROPOUT = ["model.hidden_dropout=0", "model.attention_dropout=0", "train.eval_interval=1000"]
TP2 = ["parallel.tensor_model_parallel_size=2"]
SP = ["parallel.sequence_parallel=true"]
PP2 = ["parallel.pipeline_model_parallel_size=2"]
LAYOUTS = {  # name -> (processes, overrides, kinds)
    "tp2": (2, TP2, ("encoder", "t5")),
    "tp2_sp": (2, TP2 + SP, ("encoder", "t5")),
    "dp2": (2, [], ("encoder", "t5")),
    "pp2": (2, PP2, ("encoder", "t5")),
    "tp2_pp2": (4, TP2 + PP2, ("encoder", "t5")),
    "pp2_dp2": (4, PP2, ("t5",)),
}


def _save_gradients(trainer, directory: Path) -> None:
    """The reduced gradients (DDP main_grad), stored like the weights: dist_checkpointing
    then reassembles them whatever the layout."""
    def with_grads(node):
        if isinstance(node, dict):
            return {k: v for k, v in ((k, with_grads(v)) for k, v in node.items())
                    if v is not None}
        if isinstance(node, ShardedTensor) and hasattr(node.data, "main_grad"):
            return dataclasses.replace(node, data=node.data.main_grad.float().clone())
        return None

    state = with_grads(trainer.modules[0].sharded_state_dict())
    if torch.distributed.get_rank() == 0:
        directory.mkdir(parents=True)
    torch.distributed.barrier()
    dist_checkpointing.save(state, str(directory))


def _loss_and_gradients(kind, overrides, cache_dir, run_dir, grads_dir, init_from):
    from megatron_seqpt.runtime import distributed
    from megatron_seqpt.training.loop import Trainer
    from tests.run_configs import tiny_config

    load = [f"checkpoint.load={init_from}"] if init_from else []
    config = tiny_config(kind, cache_dir, [*NO_DROPOUT, *overrides, *load, "train.steps=1"])
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    trainer = Trainer(config, run_dir, ctx)
    if init_from is None:
        trainer.save_checkpoint()
    loss = trainer.forward_backward()["lm loss"]
    _save_gradients(trainer, grads_dir)
    distributed.shutdown()
    return loss


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def load_full(single_process_group):
    """Whole tensors of a sharded checkpoint (dist_checkpointing needs a process group)."""
    return lambda path: dist_checkpointing.load_plain_tensors(str(path))


@pytest.fixture(scope="module")
def single_process_group():
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}",
                                         rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def reference(ranks, tmp_path_factory, cache_dir, load_full):
    """Per model kind: (checkpoint, loss, gradients) of the single-process model."""
    found = {}

    def get(kind):
        if kind not in found:
            root = tmp_path_factory.mktemp(f"reference-{kind}")
            (loss,) = ranks.run(_loss_and_gradients, 1, kind, [], cache_dir, root / "run",
                                root / "grads", None)
            found[kind] = (root / "run", loss, load_full(root / "grads"))
        return found[kind]

    return get


CASES = [(kind, name) for name, (_, _, kinds) in LAYOUTS.items() for kind in kinds]


@pytest.mark.parametrize("kind, layout", CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_layout_matches_single_process(kind, layout, ranks, reference, load_full, cache_dir,
                                       tmp_path):
    processes, overrides, _ = LAYOUTS[layout]
    checkpoint, ref_loss, ref_grads = reference(kind)
    losses = ranks.run(_loss_and_gradients, processes, kind, overrides, cache_dir,
                       tmp_path / "run", tmp_path / "grads", checkpoint)
    assert all(loss == pytest.approx(ref_loss, rel=1e-6) for loss in losses), (losses, ref_loss)
    grads = load_full(tmp_path / "grads")
    assert grads.keys() == ref_grads.keys()
    for key, value in grads.items():
        assert_close_to_scale(value, ref_grads[key], key)


def _train(kind, overrides, cache_dir, run_dir):
    """Per-step losses of a short run (3 steps, checkpoints at 2 and 3 unless overridden)."""
    from megatron_seqpt.runtime import distributed
    from megatron_seqpt.training.loop import Trainer
    from megatron_seqpt.training.metrics import read_metrics
    from tests.run_configs import tiny_config

    config = tiny_config(kind, cache_dir, [*NO_DROPOUT, "train.steps=3",
                                           "checkpoint.save_interval=2",
                                           "checkpoint.keep_last=0", *overrides])
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    Trainer(config, run_dir, ctx).run()
    distributed.shutdown()
    if ctx.is_main:
        return {r["step"]: r["loss"] for r in read_metrics(Path(run_dir) / "metrics.jsonl")
                if "split" not in r}


@pytest.mark.parametrize("kind, processes, overrides", [
    ("t5", 2, TP2), ("encoder", 2, PP2), ("t5", 2, PP2)],
    ids=["t5-tp2", "encoder-pp2", "t5-pp2"])
def test_checkpoint_resumes_under_another_layout(kind, processes, overrides, ranks, cache_dir,
                                                 tmp_path):
    """Save at step 2 with the layout, resume at one process: step 3 matches."""
    parallel_losses = ranks.run(_train, processes, kind, overrides, cache_dir,
                                tmp_path / "parallel")[0]
    _resume_from_step_2(tmp_path / "parallel", tmp_path / "single")
    (single_losses,) = ranks.run(_train, 1, kind, [], cache_dir, tmp_path / "single")
    assert sorted(single_losses) == [3]
    assert single_losses[3] == pytest.approx(parallel_losses[3], rel=1e-5)


def _resume_from_step_2(source: Path, target: Path) -> None:
    (target / "checkpoints").mkdir(parents=True)
    shutil.copytree(source / "checkpoints/step_0000002", target / "checkpoints/step_0000002")
    (target / "checkpoints/latest").write_text("step_0000002\n")


UNFREEZE_AT_3 = [f"freeze.{group}.{key}" for group in ("embeddings", "encoder")
                 for key in ("frozen=true", "unfreeze_at_step=3")]


@pytest.mark.parametrize("freeze", [False, True], ids=["all-trainable", "unfreeze-at-3"])
def test_distributed_optimizer_resumes_exactly(freeze, ranks, cache_dir, tmp_path):
    """DP=2 with the distributed optimizer: the steps after resuming at step 2 equal the
    straight run's. Later steps show whether AdamW's state (step counter included) came back;
    with the unfreeze at step 3 both runs also carry the state across the optimizer rebuild."""
    overrides = ["parallel.use_distributed_optimizer=true", "train.steps=5",
                 *(UNFREEZE_AT_3 if freeze else [])]
    straight = ranks.run(_train, 2, "t5", overrides, cache_dir, tmp_path / "straight")[0]
    _resume_from_step_2(tmp_path / "straight", tmp_path / "resumed")
    resumed = ranks.run(_train, 2, "t5", overrides, cache_dir, tmp_path / "resumed")[0]
    assert sorted(resumed) == [3, 4, 5]
    assert [resumed[s] for s in (3, 4, 5)] == [straight[s] for s in (3, 4, 5)]


def _train_with_groups(overrides, cache_dir, run_dir):
    """Per-step losses and, at the end, each optimizer group's freeze group and LRs."""
    from megatron_seqpt.runtime import distributed
    from megatron_seqpt.training.loop import Trainer
    from megatron_seqpt.training.metrics import read_metrics
    from tests.run_configs import tiny_config

    config = tiny_config("t5", cache_dir, [*NO_DROPOUT, "checkpoint.keep_last=0", *overrides])
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    trainer = Trainer(config, run_dir, ctx)
    trainer.run()
    groups = sorted((g.get("freeze_group"), g["wd_mult"], g["max_lr"], g["min_lr"], g["lr"])
                    for g in trainer.opt.optimizer.param_groups if g["params"])
    distributed.shutdown()
    if ctx.is_main:
        losses = {r["step"]: r["loss"] for r in read_metrics(Path(run_dir) / "metrics.jsonl")
                  if "split" not in r}
        return losses, groups


def test_distributed_optimizer_resumes_after_unfreeze_with_group_lrs(ranks, cache_dir, tmp_path):
    """DP=2, distributed optimizer, embeddings and encoder unfrozen at step 2 with their own
    warm-up and the encoder at half the LR: resumed at step 4, each group keeps its own LR
    settings (groups that differ only by freeze group must not take each other's), and the
    losses are the uninterrupted run's."""
    overrides = ["parallel.use_distributed_optimizer=true", "train.steps=6",
                 "checkpoint.save_interval=4", "optim.warmup_steps=0",
                 *[f"freeze.{group}.{key}" for group in ("embeddings", "encoder")
                   for key in ("frozen=true", "unfreeze_at_step=2", "warmup_steps=3")],
                 "freeze.encoder.lr_mult=0.5"]
    straight, straight_groups = ranks.run(_train_with_groups, 2, overrides, cache_dir,
                                          tmp_path / "straight")[0]
    target = tmp_path / "resumed"
    (target / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "straight/checkpoints/step_0000004",
                    target / "checkpoints/step_0000004")
    (target / "checkpoints/latest").write_text("step_0000004\n")
    resumed, resumed_groups = ranks.run(_train_with_groups, 2, overrides, cache_dir, target)[0]
    assert resumed_groups == straight_groups
    assert sorted(resumed) == [5, 6]
    assert [resumed[s] for s in (5, 6)] == [straight[s] for s in (5, 6)]


def _losses_with_rebuild(cache_dir, run_dir, rebuild_after):
    """Four steps with the distributed optimizer, DDP and optimizer rebuilt (as an unfreeze
    does) after ``rebuild_after`` steps; returns the losses."""
    from megatron_seqpt.runtime import distributed
    from megatron_seqpt.training.loop import Trainer
    from tests.run_configs import tiny_config

    config = tiny_config("t5", cache_dir, [*NO_DROPOUT, "train.steps=4",
                                           "parallel.use_distributed_optimizer=true"])
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    trainer = Trainer(config, run_dir, ctx)
    losses = []
    for step in range(4):
        if step == rebuild_after:
            trainer.set_trainable(dict(trainer.trainable))
        losses.append(trainer.train_step()["loss"])
    distributed.shutdown()
    return losses


def test_distributed_optimizer_rebuild_keeps_the_state(ranks, cache_dir, tmp_path):
    """DP=2: each rank's slice of the Adam state survives the rebuild exactly."""
    plain = ranks.run(_losses_with_rebuild, 2, cache_dir, tmp_path / "plain", None)[0]
    rebuilt = ranks.run(_losses_with_rebuild, 2, cache_dir, tmp_path / "rebuilt", 2)[0]
    assert rebuilt == plain


@pytest.mark.parametrize("kind", ["t5", "encoder"])
def test_pipeline_trains_like_one_stage_across_an_unfreeze(kind, ranks, reference, cache_dir,
                                                            tmp_path):
    """Embeddings and encoder frozen for two steps, then unfrozen (rebuilding DDP and
    optimizer on every stage): PP=2 takes the same steps as one process. For T5 the encoder
    stage does forward work only while frozen."""
    checkpoint, _, _ = reference(kind)
    schedule = ["train.steps=4", *[f"freeze.{group}.{key}" for group in ("embeddings", "encoder")
                                   for key in ("frozen=true", "unfreeze_at_step=2")]]
    schedule.append(f"checkpoint.load={checkpoint}")
    (single,) = ranks.run(_train, 1, kind, schedule, cache_dir, tmp_path / "one")
    piped = ranks.run(_train, 2, kind, [*schedule, *PP2], cache_dir, tmp_path / "pp2")[0]
    assert sorted(piped) == [1, 2, 3, 4]
    for step in single:
        assert piped[step] == pytest.approx(single[step], rel=1e-5), step


def _warm_started_word_embeddings(encoder, cache_dir, run_dir):
    """Every copy of the word embeddings on this rank after the warm start (PP=2)."""
    from megatron_seqpt.runtime import distributed
    from megatron_seqpt.training.loop import Trainer
    from tests.run_configs import tiny_config

    config = tiny_config("t5", cache_dir, [*NO_DROPOUT, *PP2, f"init.from_encoder={encoder}"])
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    model = Trainer(config, run_dir, ctx).modules[0]
    copies = {}
    if model.pre_process:
        copies["embedding"] = model.embedding.word_embeddings.weight.detach().clone()
    if model.post_process:
        copies["output_layer"] = model.output_layer.weight.detach().clone()
    distributed.shutdown()
    return copies


def test_warm_start_under_pipeline_parallel_fills_the_tied_output_layer(ranks, recipe_root,
                                                                        cache_dir, tmp_path):
    """At PP=2 the last stage holds its own copy of the tied word embeddings (the output
    projection): the warm start must fill it with the MLM encoder's embeddings too, or the two
    copies differ for the whole run."""
    from tests.recipe_runs import trained

    encoder = trained("encoder", recipe_root)
    expected = torch.load(encoder / "weights.pt")["embedding.word_embeddings.weight"]
    first, last = ranks.run(_warm_started_word_embeddings, 2, encoder, cache_dir, tmp_path)
    assert set(first) == {"embedding"} and set(last) == {"output_layer"}
    assert torch.equal(first["embedding"], expected)
    assert torch.equal(last["output_layer"], expected)
