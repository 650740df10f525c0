"""Hugging Face export and import of tiny trained runs: the exported MLM encoder, classifier,
tagger and T5 give the project's logits and losses on real multilingual text, the fast tokenizer
gives the project's ids on every record of the built-in corpus, HF greedy generation equals
``seqpt generate``, a TP=2 (PP=2 for T5) checkpoint exports to the same tensors as TP=1, export
then import gives back the same bits (and the import trains), and bad input stops with a clear
error and nothing half-written."""

import json
from pathlib import Path

import pytest
import torch

from megatron_seqpt import cli
from megatron_seqpt.config import dump
from megatron_seqpt.export import parity
from megatron_seqpt.export.hf_export import load_run_model
from megatron_seqpt.runtime.local_ranks import run_ranks
from megatron_seqpt.tasks.generate_run import generate_from_run
from megatron_seqpt.tasks.generation import GenerationConfig, generate
from megatron_seqpt.text.corpus import default_corpus_path
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer
from megatron_seqpt.training import checkpoint as ckpt
from tests.prepared_data import prepared_corpus
from tests.recipe_runs import trained
from tests.run_configs import tiny_config

transformers = pytest.importorskip("transformers")
load_file = pytest.importorskip("safetensors.torch").load_file

QUIET = ["logging.tensorboard=false", "logging.log_interval=25"]
AUTO = {"encoder": transformers.AutoModelForMaskedLM, "t5": transformers.AutoModelForSeq2SeqLM,
        "classifier": transformers.AutoModelForSequenceClassification,
        "tagger": transformers.AutoModelForTokenClassification}
ARCHITECTURE = {"encoder": "MegatronBertForMaskedLM",
                "t5": "BlenderbotForConditionalGeneration",
                "classifier": "MegatronBertForSequenceClassification",
                "tagger": "MegatronBertForTokenClassification"}


def _export(run: Path, output: Path, *args: str) -> int:
    return cli.main(["export", "hf", "--run", str(run), "--output", str(output), *args])


@pytest.fixture(scope="module")
def runs(recipe_root, tmp_path_factory):
    """Run directories: the tiny encoder and T5, and two short fine-tunings of the encoder."""
    encoder = trained("encoder", recipe_root)
    found = {"encoder": encoder, "t5": trained("t5", recipe_root)}
    root = tmp_path_factory.mktemp("finetuned")
    for name, task in (("classifier", ["task.builtin=topic", "task.pooling=cls"]),
                       ("tagger", ["task.builtin=punct"]),
                       ("mean_classifier", ["task.builtin=topic", "train.steps=1"])):
        run_dir = root / name
        assert cli.main(["finetune", "--run-dir", str(run_dir), "--init", str(encoder),
                         "train.steps=3", "optim.lr=2e-3", *task, *QUIET]) == 0
        found[name] = run_dir
    return found


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    root = tmp_path_factory.mktemp("exported")
    names = ["encoder", "t5", "classifier", "tagger"]
    for name in names:
        assert _export(runs[name], root / name) == 0
    return {name: root / name for name in names}


def _held_out_texts() -> list[str]:
    """The second paragraph of each language (the export's own check reads the first)."""
    return parity.sample_texts(per_language=2)[1::2]


@pytest.mark.parametrize("name", ["encoder", "t5", "classifier", "tagger"])
def test_exported_model_gives_the_projects_logits_and_loss(name, runs, exported,
                                                           single_process):
    directory = exported[name]
    hf = AUTO[name].from_pretrained(directory, local_files_only=True).eval()
    assert type(hf).__name__ == ARCHITECTURE[name]
    loaded = load_run_model(runs[name], None)
    batch = parity.make_batch(_held_out_texts(), loaded.tokenizer, ARCHITECTURE[name],
                              loaded.config)
    ours = parity.project_logits(loaded.model, batch, ARCHITECTURE[name])
    theirs = parity.hf_logits(hf, batch)
    real = parity.real_positions(batch, ours)
    assert ours.shape == theirs.shape
    assert real.sum() > 100 or ours.dim() == 2
    assert (ours[real] - theirs[real]).abs().max() < 1e-4
    with torch.no_grad():
        if name == "encoder":
            # Every 7th real token predicted (as masked LM training does, on unmasked input).
            labels = torch.where(batch.mask.bool() & (torch.arange(batch.ids.numel())
                                                      .view_as(batch.ids) % 7 == 0),
                                 batch.ids, -100)
            per_token = loaded.model(batch.ids, batch.mask, lm_labels=labels.clamp(min=0))
            ours_loss = per_token[labels >= 0].mean()
            theirs_loss = hf(input_ids=batch.ids, attention_mask=batch.mask,
                             labels=labels).loss
        elif name == "t5":
            labels = torch.cat([batch.decoder_ids[:, 1:], batch.decoder_ids[:, :1] * 0], 1)
            labels = torch.where(batch.decoder_mask.bool() & (labels > 0), labels, -100)
            masks = parity.t5_attention_masks(
                {"text_enc": batch.ids, "text_dec": batch.decoder_ids, "enc_mask": batch.mask,
                 "dec_mask": batch.decoder_mask}, parity.LOCAL)
            per_token = loaded.model(batch.ids, batch.decoder_ids, *masks,
                                     lm_labels=labels.clamp(min=0))
            ours_loss = per_token[labels >= 0].mean()
            theirs_loss = hf(input_ids=batch.ids, attention_mask=batch.mask,
                             decoder_input_ids=batch.decoder_ids,
                             decoder_attention_mask=batch.decoder_mask, labels=labels).loss
        else:
            labels_config = hf.config.id2label
            assert [labels_config[i] for i in range(len(labels_config))] == \
                loaded.config.task.labels
            return
    assert ours_loss.item() == pytest.approx(theirs_loss.item(), rel=1e-5)


def test_tokenizer_gives_the_projects_ids_on_every_corpus_record(exported):
    tokenizer = SentencePieceTokenizer(prepared_corpus().tokenizer_model)
    encoder_tok = transformers.AutoTokenizer.from_pretrained(exported["encoder"])
    t5_tok = transformers.AutoTokenizer.from_pretrained(exported["t5"])
    records = [json.loads(line) for line in
               default_corpus_path().read_text(encoding="utf-8").splitlines()]
    assert len({r["lang"] for r in records}) == 12
    for record in records:
        text = record["text"]
        ids = tokenizer.tokenize(text)
        assert encoder_tok(text, add_special_tokens=False)["input_ids"] == ids, record["id"]
        assert encoder_tok(text)["input_ids"] == [tokenizer.cls, *ids, tokenizer.sep]
        assert t5_tok(text)["input_ids"] == ids
        assert t5_tok.decode(ids) == tokenizer.detokenize(ids)
    for token in ("pad", "eos", "bos", "unk", "cls", "sep", "mask"):
        assert getattr(encoder_tok, f"{token}_token_id") == getattr(tokenizer, token)
    assert encoder_tok.convert_tokens_to_ids("<extra_id_0>") == \
        tokenizer.additional_special_tokens_ids[0]
    pair = encoder_tok("a b", "c")
    assert pair["input_ids"] == [tokenizer.cls, *tokenizer.tokenize("a b"), tokenizer.sep,
                                 *tokenizer.tokenize("c"), tokenizer.sep]


def test_hf_greedy_generation_equals_seqpt_generate(runs, exported, single_process):
    sources = _held_out_texts()[:6]
    # A 6-step model ends at once when it may: both decoders hold eos back for 8 tokens.
    settings = GenerationConfig(max_new_tokens=12, min_new_tokens=8)
    texts = generate_from_run(runs["t5"], sources, settings)
    single_process.shutdown()
    loaded = load_run_model(runs["t5"], None)
    tok = loaded.tokenizer
    ours = generate(loaded.model, [tok.tokenize(s)[:64] for s in sources], bos=tok.bos,
                    eos=tok.eos, pad=tok.pad, config=settings, vocab_size=tok.vocab_size)
    assert [tok.detokenize(ids) for ids in ours] == texts
    tokenizer = transformers.AutoTokenizer.from_pretrained(exported["t5"])
    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(exported["t5"]).eval()
    inputs = tokenizer(sources, padding=True, truncation=True, max_length=64,
                       return_tensors="pt")
    with torch.no_grad():
        generated = hf.generate(**inputs, max_new_tokens=12, min_new_tokens=8)
    assert (generated[:, 0] == tok.bos).all()
    theirs = [[int(i) for i in row[1:] if i not in (tok.eos, tok.pad)] for row in generated]
    assert theirs == ours
    assert all(len(ids) >= 8 for ids in ours)
    assert tokenizer.batch_decode(generated, skip_special_tokens=True) == texts


def _reshard(run: str, layout: list, output: str) -> None:
    """(Runs on each rank.) The run's checkpoint loaded into ``layout`` and saved from it."""
    import dataclasses

    from megatron_seqpt.config import load_run_config
    from megatron_seqpt.models.specs import choose_impl
    from megatron_seqpt.recipes.weights import save_weights
    from megatron_seqpt.runtime import distributed
    from megatron_seqpt.training import run_state
    from megatron_seqpt.training.pretraining import PretrainWorkload

    source = ckpt.resolve(run)
    meta = ckpt.content_metadata(source)
    config = load_run_config(str(Path(run) / "config.yaml"), layout)
    config = dataclasses.replace(config, checkpoint=dataclasses.replace(config.checkpoint,
                                                                        load=None))
    ctx = distributed.initialize(config.parallel, config.model, config.train.seed)
    impl = choose_impl("local", "sdpa", ctx.backend)
    modules = PretrainWorkload(config).build_modules(ctx, meta["model"]["vocab_size"], "fp32",
                                                     impl)
    loaded = ckpt.load(source, {"model": run_state.model_state(modules)})
    modules[0].load_state_dict(loaded["model"], strict=True)
    save_weights(modules, Path(output), config, meta, ckpt.tokenizer_file_of(source))
    distributed.shutdown()


@pytest.mark.parametrize("name, layout", [
    ("encoder", ["parallel.tensor_model_parallel_size=2"]),
    ("t5", ["parallel.pipeline_model_parallel_size=2"])], ids=["encoder-tp2", "t5-pp2"])
def test_export_of_a_parallel_checkpoint_equals_the_one_process_export(name, layout, runs,
                                                                        exported, tmp_path):
    run_ranks(_reshard, 2, str(runs[name]), layout, str(tmp_path / "resharded"))
    written = ckpt.content_metadata(ckpt.resolve(tmp_path / "resharded"))["layout"]
    assert written["tp"] * written["pp"] == 2
    assert _export(tmp_path / "resharded", tmp_path / "hf") == 0
    ref = load_file(exported[name] / "model.safetensors")
    got = load_file(tmp_path / "hf" / "model.safetensors")
    assert got.keys() == ref.keys()
    for key, tensor in got.items():
        assert torch.equal(tensor, ref[key]), key


def _export_command(run: str, output: str) -> tuple[int, str]:
    """(Runs in a rank process.) ``seqpt export hf`` as torchrun starts it on each rank: its
    exit status and what it printed."""
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = cli.main(["export", "hf", "--run-dir", run, "--output", output])
    return status, printed.getvalue()


def test_under_a_launch_of_two_ranks_the_first_writes_the_export(runs, exported, ranks,
                                                                 tmp_path):
    """Every rank exported and published the same directory, each replacing the one before."""
    (status0, printed0), (status1, printed1) = ranks.run(
        _export_command, 2, str(runs["encoder"]), str(tmp_path / "hf"))
    assert status0 == status1 == 0
    assert "wrote" in printed0 and printed1 == "", (printed0, printed1)
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no staging directory left
    ref = load_file(exported["encoder"] / "model.safetensors")
    got = load_file(tmp_path / "hf" / "model.safetensors")
    assert got.keys() == ref.keys()
    for key, tensor in got.items():
        assert torch.equal(tensor, ref[key]), key


def _plain_tensors(checkpoint: Path) -> dict:
    from megatron.core import dist_checkpointing

    from megatron_seqpt.config.schema import ParallelConfig
    from megatron_seqpt.runtime import distributed

    distributed.initialize(ParallelConfig())
    try:
        loaded = dist_checkpointing.load_plain_tensors(str(checkpoint))
        return {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    finally:
        distributed.shutdown()


@pytest.mark.parametrize("name", ["encoder", "t5"])
def test_export_then_import_gives_back_the_same_weights(name, runs, exported, single_process,
                                                        tmp_path):
    corpus = prepared_corpus()
    data = ["data.seq_length=64", "data.decoder_seq_length=32",
            "data.prefixes={" + ", ".join(f"{k}: {v}" for k, v in corpus.prefixes.items())
            + "}", f"data.cache_dir={tmp_path / 'cache'}"]
    assert cli.main(["import", "hf", "--model", str(exported[name]), "--output",
                     str(tmp_path / "imported"), *data]) == 0
    original = _plain_tensors(ckpt.resolve(runs[name]))
    imported = _plain_tensors(ckpt.resolve(tmp_path / "imported"))
    model_keys = [k for k in imported if not k.startswith("encoder_mlm_")]
    assert len(model_keys) > 20
    for key in model_keys:
        assert torch.equal(imported[key], original[key]), key
    if name == "encoder":  # and it trains on here
        run_dir = tmp_path / "continued"
        assert cli.main(["pretrain", "--config", str(tmp_path / "imported" / "config.yaml"),
                         "--run-dir", str(run_dir), f"checkpoint.load={tmp_path / 'imported'}",
                         "train.steps=2", "train.global_batch_size=8",
                         "train.micro_batch_size=4", "train.eval_steps=1", *QUIET]) == 0
        result = json.loads((run_dir / "result.json").read_text())
        assert result["status"] == "completed" and result["valid_loss"] is not None


def test_a_bf16_run_exports_its_bf16_weights_and_imports_back_bit_for_bit(single_process,
                                                                           tmp_path):
    """bf16 training runs on the CPU too: the export holds the run's bf16 weights (the same
    logits as the project's model once both are fp32), and importing it gives them back."""
    config = tmp_path / "t5_bf16.yaml"
    dump(tiny_config("t5", tmp_path / "cache", ["train.precision=bf16", "train.steps=3",
                                                "optim.lr=1e-2"]), config)
    run_dir = tmp_path / "run"
    assert cli.main(["pretrain", "--config", str(config), "--run-dir", str(run_dir),
                     *QUIET]) == 0
    assert _export(run_dir, tmp_path / "hf") == 0
    saved = load_file(tmp_path / "hf" / "model.safetensors")
    assert {tensor.dtype for tensor in saved.values()} == {torch.bfloat16}
    hf = AUTO["t5"].from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    assert hf.dtype == torch.bfloat16
    loaded = load_run_model(run_dir, None)
    batch = parity.make_batch(_held_out_texts(), loaded.tokenizer, ARCHITECTURE["t5"],
                              loaded.config)
    ours = parity.project_logits(loaded.model.float(), batch, ARCHITECTURE["t5"])
    theirs = parity.hf_logits(hf.float(), batch)
    real = parity.real_positions(batch, ours)
    assert (ours[real] - theirs[real]).abs().max() < 1e-4 * max(1.0, ours.abs().max().item())
    assert cli.main(["import", "hf", "--model", str(tmp_path / "hf"), "--config", str(config),
                     "--output", str(tmp_path / "imported")]) == 0
    original = _plain_tensors(ckpt.resolve(run_dir))
    imported = _plain_tensors(ckpt.resolve(tmp_path / "imported"))
    model_keys = [k for k in imported if not k.startswith("encoder_mlm_")]
    assert len(model_keys) > 20
    for key in model_keys:
        assert imported[key].dtype == torch.bfloat16 and torch.equal(imported[key],
                                                                      original[key]), key


def test_bad_input_is_refused_clearly_and_nothing_is_half_written(runs, exported, tmp_path,
                                                                  capsys, monkeypatch):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert _export(empty, tmp_path / "out") == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert _export(runs["t5"], tmp_path / "out", "--as", "encoder") == 2
    err = capsys.readouterr().err
    assert "holds a model of kind seq2seq" in err and "extract-encoder" in err
    # MegatronBertForSequenceClassification pools the first token, not the mean.
    assert _export(runs["mean_classifier"], tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "task.pooling=mean" in err and "task.pooling=cls" in err
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    assert _export(runs["encoder"], taken) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    # A failure while writing leaves neither the output nor its staging directory.
    from megatron_seqpt.export import hf_export

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hf_export, "model_card", fail)
    with pytest.raises(OSError):
        _export(runs["encoder"], tmp_path / "fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty_run", "taken"]
    # An import needs the sentencepiece model next to the weights.
    (exported["encoder"] / "sentencepiece.model").rename(tmp_path / "spm")
    try:
        assert cli.main(["import", "hf", "--model", str(exported["encoder"]), "--output",
                         str(tmp_path / "imp"), "data.seq_length=64"]) == 2
        assert "sentencepiece.model" in capsys.readouterr().err
    finally:
        (tmp_path / "spm").rename(exported["encoder"] / "sentencepiece.model")
    assert not (tmp_path / "imp").exists()
