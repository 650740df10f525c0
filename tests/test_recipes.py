"""The recipes' conversions and variants on tiny trained models: a warm-started T5 encoder
computes what the MLM encoder computes, an extracted encoder what the T5 encoder computes;
mismatched models are refused; the encoder-MLM variant learns; the demo reports."""

import json

import pytest
import torch
import yaml
from megatron.core import dist_checkpointing

from megatron_seqpt import cli
from megatron_seqpt.config import dump
from megatron_seqpt.errors import UserError
from megatron_seqpt.models.forward import t5_attention_masks
from megatron_seqpt.recipes import convert
from megatron_seqpt.recipes.demo import DemoSettings, run_demo
from megatron_seqpt.training import checkpoint as ckpt
from megatron_seqpt.training.loop import Trainer
from megatron_seqpt.training.metrics import read_metrics
from tests.recipe_runs import trained
from tests.run_configs import tiny_config

NO_DROPOUT = ["model.hidden_dropout=0", "model.attention_dropout=0"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def trainer_for(kind, cache_dir, run_dir, ctx_factory, overrides=()):
    config = tiny_config(kind, cache_dir, [*NO_DROPOUT, "train.steps=1", *overrides])
    return Trainer(config, run_dir, ctx_factory.initialize(config.parallel, config.model,
                                                           config.train.seed))


def encoder_states(encoder_trainer, t5_trainer):
    """Hidden states of the MLM encoder and of the T5 encoder on the same real batch."""
    batch = next(t5_trainer.data.train)
    masks = t5_attention_masks(batch, t5_trainer.impl)
    mlm, t5 = encoder_trainer.modules[0], t5_trainer.modules[0]
    mlm.eval(), t5.eval()
    with torch.no_grad():
        from_mlm = mlm.encode(batch["text_enc"], batch["enc_mask"])
        from_t5 = t5(batch["text_enc"], batch["text_dec"], *masks,
                     output_encoder_hidden_only=True)
    real = batch["enc_mask"].transpose(0, 1).bool()  # [s, b] like the hidden states
    return from_mlm[real], from_t5[real]


def test_warm_started_t5_encoder_equals_the_mlm_encoder(single_process, recipe_root, cache_dir,
                                                        tmp_path):
    encoder_run = trained("encoder", recipe_root)
    dump(tiny_config("t5", cache_dir, NO_DROPOUT), tmp_path / "t5.yaml")
    convert.warm_start(encoder_run, str(tmp_path / "t5.yaml"), [], tmp_path / "warm")
    assert (tmp_path / "warm" / "config.yaml").is_file()
    t5 = trainer_for("t5", cache_dir, tmp_path / "t5", single_process,
                     [f"checkpoint.load={tmp_path / 'warm'}"])
    encoder = trainer_for("encoder", cache_dir, tmp_path / "enc", single_process,
                          [f"checkpoint.load={encoder_run}"])
    from_mlm, from_t5 = encoder_states(encoder, t5)
    torch.testing.assert_close(from_t5, from_mlm, rtol=0, atol=0)
    # The decoder is new: not the encoder's (the encoder has none), and not left at zero.
    assert any(n.startswith("decoder.") and p.abs().sum() > 0
               for n, p in t5.modules[0].named_parameters())


def test_extracted_encoder_equals_the_t5_encoder(single_process, recipe_root, cache_dir,
                                                 tmp_path):
    t5_run = trained("t5", recipe_root)
    convert.extract_encoder(t5_run, tmp_path / "extracted", head="from-t5")
    encoder = trainer_for("encoder", cache_dir, tmp_path / "enc", single_process,
                          [f"checkpoint.load={tmp_path / 'extracted'}"])
    t5 = trainer_for("t5", cache_dir, tmp_path / "t5", single_process,
                     [f"checkpoint.load={t5_run}"])
    from_mlm, from_t5 = encoder_states(encoder, t5)
    torch.testing.assert_close(from_mlm, from_t5, rtol=0, atol=0)
    # "from-t5": T5's output bias, and the head's dense layer starts as the identity.
    mlm = encoder.modules[0]
    assert torch.equal(mlm.output_layer.bias, t5.modules[0].output_layer.bias)
    assert torch.equal(mlm.lm_head.dense.weight, torch.eye(mlm.lm_head.dense.weight.shape[0]))


def test_an_encoder_is_extracted_from_a_fine_tuned_seq2seq_run(single_process, recipe_root,
                                                              cache_dir, tmp_path):
    """A seq2seq fine-tuning run's checkpoint holds a T5 like a pre-training run's; its config
    is a fine-tuning one (extraction read it as a pre-training config: 'unknown key
    init.from_run'). The extracted encoder is a pre-training run's, with the tuned weights."""
    tuned = tmp_path / "tuned"
    assert cli.main(["finetune", "--run-dir", str(tuned), "--init",
                     str(trained("t5", recipe_root)), "--no-evaluate", "task.builtin=restore",
                     "task.epochs=null", "train.steps=1", "optim.lr=1e-2",
                     "logging.tensorboard=false"]) == 0
    convert.extract_encoder(tuned, tmp_path / "extracted", head="new")
    written = yaml.safe_load((tmp_path / "extracted" / "config.yaml").read_text())
    assert "task" not in written and written["model"]["kind"] == "encoder"
    trainer_for("encoder", cache_dir, tmp_path / "enc", single_process,
                [f"checkpoint.load={tmp_path / 'extracted'}"])  # an MLM run starts from it
    tuned_tensors, extracted, pretrained = (
        dist_checkpointing.load_plain_tensors(str(ckpt.resolve(path)))
        for path in (tuned, tmp_path / "extracted", trained("t5", recipe_root)))
    taken = [name for name in tuned_tensors if name.startswith(("embedding.", "encoder."))]
    assert taken
    for name in taken:
        assert torch.equal(extracted[name], tuned_tensors[name]), name
    assert not torch.equal(extracted["embedding.word_embeddings.weight"],
                           pretrained["embedding.word_embeddings.weight"])  # the tuned ones


def test_mismatched_encoder_is_refused(single_process, recipe_root, cache_dir, tmp_path):
    encoder_run = trained("encoder", recipe_root)
    config = tiny_config("t5", cache_dir, ["model.hidden_size=32",
                                           "model.encoder.num_layers=3",
                                           f"init.from_encoder={encoder_run}"])
    ctx = single_process.initialize(config.parallel, config.model, config.train.seed)
    with pytest.raises(UserError) as info:
        Trainer(config, tmp_path, ctx)
    message = str(info.value)
    assert "model.hidden_size: encoder 64, T5 config 32" in message
    assert "model.encoder" in message and "'num_layers': 3" in message
    single_process.shutdown()
    dump(config, tmp_path / "t5.yaml")
    with pytest.raises(UserError, match="not an MLM encoder"):
        convert.warm_start(trained("t5", recipe_root), str(tmp_path / "t5.yaml"), [],
                           tmp_path / "x")
    with pytest.raises(UserError, match="not a T5 model"):
        convert.extract_encoder(encoder_run, tmp_path / "y", "new")


def test_encoder_mlm_loss_variant_learns(single_process, cache_dir, tmp_path):
    config = tiny_config("t5", cache_dir, ["model.encoder_mlm_weight=1.0", "train.steps=30",
                                           "optim.lr=3e-3", "train.eval_interval=15"])
    trainer = Trainer(config, tmp_path, single_process.initialize(
        config.parallel, config.model, config.train.seed))
    trainer.run()  # evaluation included: it reports the seq2seq loss alone
    records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "split" not in r]
    assert len(records) == 30
    mlm = [r["encoder_mlm_loss"] for r in records]
    assert all(torch.isfinite(torch.tensor(mlm)))
    assert sum(mlm[-5:]) / 5 < sum(mlm[:5]) / 5 - 0.5, mlm
    names = [n for n, _ in trainer.modules[0].named_parameters()]
    assert any(n.startswith("encoder_mlm_head.") for n in names)


def test_encoder_mlm_objective_does_not_depend_on_the_micro_batch_split():
    """The schedule sums each micro-batch's loss and divides by the global decoder token
    count; the MLM term must be a per-token sum too, so one micro-batch of 4 samples and two
    of 2 (any layout) train on the same objective."""
    from megatron_seqpt.models.forward import seq2seq_with_encoder_mlm_loss

    generator = torch.Generator().manual_seed(0)
    decoder = torch.rand(4, 6, generator=generator)
    loss_mask = (torch.rand(4, 6, generator=generator) < 0.7).float()
    # Masked encoder positions per sample, unevenly spread (as BERT masking draws them).
    mlm = [torch.rand(n, generator=generator) for n in (1, 7, 3, 2)]

    def objective(splits):
        total, tokens = 0.0, 0
        for rows in splits:
            loss, count, _ = seq2seq_with_encoder_mlm_loss(
                loss_mask[rows], 0.5, (decoder[rows], torch.cat([mlm[r] for r in rows])))
            total, tokens = total + loss, tokens + count
        return float(total / tokens)

    whole = objective([[0, 1, 2, 3]])
    assert objective([[0, 1], [2, 3]]) == pytest.approx(whole, rel=1e-6)
    assert objective([[0], [1], [2], [3]]) == pytest.approx(whole, rel=1e-6)


@pytest.mark.slow
def test_demo_runs_every_stage_and_reports(single_process, tmp_path):
    report = run_demo(tmp_path, DemoSettings(encoder_steps=6, seq2seq_steps=6, hidden_size=64,
                                             layers=1, finetune_steps=3))
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["compute_saving"] == pytest.approx(report["compute_saving"])
    assert set(on_disk["stages"]) == {"encoder", "t5_warm", "t5_scratch"}
    warm, scratch = on_disk["stages"]["t5_warm"], on_disk["stages"]["t5_scratch"]
    assert warm["steps"] == scratch["steps"] == 6
    # Same steps, embeddings and encoder frozen for half of them: fewer FLOPs than scratch.
    assert 0 < warm["flops"] < scratch["flops"]
    assert on_disk["compute_saving"] == pytest.approx(on_disk["compute_saving_predicted"])
    assert (tmp_path / "loss_curves.png").stat().st_size > 10_000
    markdown = (tmp_path / "report.md").read_text()
    assert "less" in markdown and "## Downstream" in markdown
    # Every pre-trained model scored on its task, next to the task's baseline.
    assert set(on_disk["downstream"]) == {"encoder", "t5_warm", "t5_scratch"}
    assert on_disk["downstream"]["encoder"]["task"] == "topic"
    assert "accuracy" in on_disk["downstream"]["encoder"]["metrics"]
    assert on_disk["downstream"]["t5_warm"]["baseline"]["name"] == "copy the source"
    for stage in ("encoder", "t5_warm", "t5_scratch"):
        assert 0 < on_disk["downstream"][stage]["valid_loss"] < 20, stage
    assert "pair_saving_to_target" in on_disk["compute_to_target"]
    # Continued with another setting, its complete stages would be skipped and reported as
    # made with it.
    with pytest.raises(UserError, match=r"--hidden-size 64 \(now 128\)"):
        run_demo(tmp_path, DemoSettings(encoder_steps=6, seq2seq_steps=6, hidden_size=128,
                                        layers=1, finetune_steps=3))


@pytest.mark.parametrize("flag, value", [("--encoder-steps", "0"), ("--seq2seq-steps", "-1"),
                                         ("--hidden-size", "0"), ("--hidden-size", "102"),
                                         ("--layers", "0"), ("--unfreeze-fraction", "1"),
                                         ("--unfreeze-fraction", "nan")])
def test_a_bad_demo_flag_is_refused_naming_the_flag(flag, value, tmp_path, capsys):
    assert cli.main(["demo", "--output-dir", str(tmp_path / "demo"), flag, value]) == 2
    assert f"{flag} {value}" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
