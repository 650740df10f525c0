"""MLM and span-corruption samples built by megatron-core from the default corpus, the language
blend, determinism, and the resumable data-parallel batch stream."""

import numpy as np
import pytest
import torch

from megatron_seqpt.config.schema import DataConfig, ParallelConfig
from megatron_seqpt.data.samples import (
    SampleDataError,
    build_sample_datasets,
    language_token_counts,
)
from megatron_seqpt.data.stream import BatchStream, collate
from megatron_seqpt.runtime import distributed
from megatron_seqpt.runtime.local_ranks import run_ranks
from megatron_seqpt.text.sampling import temperature_weights
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer
from tests.prepared_data import build, original_tokens, prepared_corpus, tokenizer


@pytest.fixture
def started(single_process):
    single_process.initialize(ParallelConfig(), seed=1)


def _contains(haystack: np.ndarray, needle: np.ndarray) -> bool:
    windows = np.lib.stride_tricks.sliding_window_view(haystack, len(needle))
    return bool((windows == needle).all(axis=1).any())


def test_mlm_samples_mask_at_the_configured_rate(started, tmp_path):
    tok = tokenizer()
    datasets = build("encoder", tmp_path, num_samples=(800, 0, 0), masking_probability=0.2)
    masked = tokens = as_mask = kept = 0
    for index in range(800):
        sample = datasets.train[index]
        length = int(sample["padding_mask"].sum())
        text, labels, loss = sample["text"], sample["labels"], sample["loss_mask"].astype(bool)
        # One segment: <cls> text <sep>, then padding; no token types, no next-sentence label.
        assert text[0] == tok.cls and text[length - 1] == tok.sep
        assert (text[1:length - 1] != tok.sep).all() and (text[length:] == tok.pad).all()
        assert (sample["padding_mask"][:length] == 1).all() and not sample["types"].any()
        assert sample["is_random"] == 0
        assert not loss[length:].any() and not loss[[0, length - 1]].any()
        assert (labels[~loss] == -1).all()
        # Labels hold the original pieces: unmasking gives a stretch of the source sentences.
        original = np.where(loss, labels, text)[1:length - 1]
        assert _contains(original_tokens(datasets.train, index), original)
        masked += loss.sum()
        tokens += length
        as_mask += (text[loss] == tok.mask).sum()
        kept += (text[loss] == labels[loss]).sum()
    assert abs(masked / tokens - 0.2) < 0.015
    assert abs(as_mask / masked - 0.8) < 0.02
    assert abs(kept / masked - 0.1) < 0.02
    assert abs(1 - (as_mask + kept) / masked - 0.1) < 0.02  # random pieces


def test_span_corruption_samples_are_well_formed(started, tmp_path):
    tok = tokenizer()
    sentinels = np.array(tok.additional_special_tokens_ids)
    datasets = build("t5", tmp_path, num_samples=(400, 0, 0), noise_density=0.15)
    noise = total = 0
    for index in range(400):
        sample = datasets.train[index]
        enc, dec, labels = sample["text_enc"], sample["text_dec"], sample["labels"]
        enc_len, dec_len = int(sample["enc_mask"].sum()), int(sample["loss_mask"].sum())
        # Masks agree with the padding.
        assert (sample["enc_mask"] == (np.arange(len(enc)) < enc_len)).all()
        assert (enc[enc_len:] == tok.pad).all() and (enc[:enc_len] != tok.pad).all()
        assert (sample["dec_mask"] == sample["loss_mask"]).all()
        assert (sample["loss_mask"] == (np.arange(len(dec)) < dec_len)).all()
        assert (labels[dec_len:] == -1).all() and (dec[dec_len:] == tok.pad).all()
        # The decoder reads <bos> and the labels shifted right; the labels end with <eos>.
        assert dec[0] == tok.bos and labels[dec_len - 1] == tok.eos
        assert (dec[1:dec_len] == labels[:dec_len - 1]).all()
        # Sentinels: 0, 1, 2, ... in the encoder, the same ones in the same order in the labels.
        in_enc = enc[np.isin(enc, sentinels)]
        in_labels = labels[:dec_len][np.isin(labels[:dec_len], sentinels)]
        assert (in_enc == sentinels[:len(in_enc)]).all() and (in_labels == in_enc).all()
        assert tok.mask not in enc
        # Putting each span back in place of its sentinel restores the source text.
        spans = np.split(labels[:dec_len - 1], np.flatnonzero(np.isin(labels[:dec_len - 1],
                                                                      sentinels)))[1:]
        restored = []
        for piece in enc[:enc_len].tolist():
            restored.extend(spans.pop(0)[1:].tolist() if piece in sentinels else [piece])
        source = original_tokens(datasets.train, index)
        assert restored == source[:len(restored)].tolist() and not spans
        noise += dec_len - 1 - len(in_labels)
        total += len(restored)
    assert abs(noise / total - 0.15) < 0.015


def _mean_span_length(datasets, count: int) -> float:
    sentinels = tokenizer().additional_special_tokens_ids
    lengths = []
    for index in range(count):
        sample = datasets.train[index]
        labels = sample["labels"][:int(sample["loss_mask"].sum()) - 1]
        starts = np.flatnonzero(np.isin(labels, sentinels))
        lengths.extend(np.diff(np.append(starts, len(labels))) - 1)
    return float(np.mean(lengths))


def test_span_lengths_follow_the_configured_mean(started, tmp_path):
    assert _mean_span_length(build("t5", tmp_path, mean_span_length=1.0), 200) == 1.0
    # megatron-core cuts spans that overshoot the masking budget: a bit under the drawn mean.
    assert 2.0 < _mean_span_length(build("t5", tmp_path, mean_span_length=3.0), 200) <= 3.0


def test_languages_are_blended_by_temperature(started, tmp_path):
    datasets = build("encoder", tmp_path, num_samples=(3000, 0, 0), sampling_alpha=0.3)
    counts = language_token_counts(prepared_corpus().prefixes)
    expected = temperature_weights(counts, 0.3)
    assert datasets.weights == expected and datasets.languages == tuple(sorted(counts))
    drawn = np.bincount([datasets.train[i]["dataset_id"] for i in range(3000)],
                        minlength=len(expected)) / 3000
    assert np.abs(drawn - [expected[lang] for lang in datasets.languages]).max() < 0.005
    # The smallest language is drawn above its share of the tokens.
    smallest = min(counts, key=counts.get)
    assert expected[smallest] > counts[smallest] / sum(counts.values())


def _first_samples(datasets, key: str, count: int = 20) -> np.ndarray:
    return np.stack([datasets.train[i][key] for i in range(count)])


@pytest.mark.parametrize("kind,key", [("encoder", "text"), ("t5", "text_enc")])
def test_same_seed_same_samples_other_seed_other_samples(started, tmp_path, kind, key):
    first = _first_samples(build(kind, tmp_path / "a", seed=5), key)
    assert np.array_equal(first, _first_samples(build(kind, tmp_path / "b", seed=5), key))
    assert not np.array_equal(first, _first_samples(build(kind, tmp_path / "c", seed=6), key))


def test_valid_split_is_built_and_empty_splits_are_none(started, tmp_path):
    datasets = build("encoder", tmp_path, num_samples=(100, 30, 0), split="80,20,0")
    assert len(datasets.valid) >= 30 and datasets.test is None
    assert datasets.valid[0]["text"].shape == datasets.train[0]["text"].shape


def test_unusable_settings_are_clear_errors(started, tmp_path):
    with pytest.raises(SampleDataError, match="valid split 0 of them, none usable"):
        build("encoder", tmp_path, split="99.9,0.05,0.05")
    with pytest.raises(SampleDataError, match="data.decoder_seq_length 16 is too short"):
        build("t5", tmp_path, decoder_seq_length=16)
    corpus = prepared_corpus()
    with pytest.raises(SampleDataError, match="no indexed dataset for language 'xx'"):
        build_sample_datasets("encoder", {"xx": str(corpus.root / "missing")}, tokenizer(),
                              DataConfig(), (10, 0, 0), 1, tmp_path)


def _batches(stream: BatchStream, count: int) -> list[dict[str, torch.Tensor]]:
    return [next(stream) for _ in range(count)]


def _assert_same(left, right):
    assert len(left) == len(right)
    for a, b in zip(left, right):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stream_resumes_exactly_where_it_stopped(started, tmp_path):
    train = build("t5", tmp_path).train
    uninterrupted = _batches(BatchStream(train, 4, dp_rank=1, dp_size=2), 7)
    first = BatchStream(train, 4, dp_rank=1, dp_size=2)
    _batches(first, 3)
    state = first.state_dict()
    assert state == {"consumed_samples": 3 * 4 * 2}
    resumed = BatchStream(train, 4, dp_rank=1, dp_size=2, num_workers=1)
    resumed.load_state_dict(state)
    _assert_same(_batches(resumed, 4), uninterrupted[3:])


def test_data_parallel_ranks_read_disjoint_samples(started, tmp_path):
    train = build("encoder", tmp_path).train
    mbs, world, steps = 3, 2, 4
    streams = [BatchStream(train, mbs, dp_rank=r, dp_size=world) for r in range(world)]
    for step in range(steps):
        for rank, stream in enumerate(streams):
            first = (step * world + rank) * mbs
            expected = collate([train[i] for i in range(first, first + mbs)])
            _assert_same([next(stream)], [expected])
    batch = _batches(BatchStream(train, 2), 1)[0]
    assert set(batch) == {"text", "labels", "loss_mask", "padding_mask"}
    assert batch["text"].dtype == torch.int64 and batch["loss_mask"].dtype == torch.float32


def test_stream_wraps_to_a_new_epoch(started, tmp_path):
    train = build("encoder", tmp_path).train
    stream = BatchStream(train, 4)
    stream.load_state_dict({"consumed_samples": len(train) - 2})
    expected = collate([train[i] for i in (len(train) - 2, len(train) - 1, 0, 1)])
    _assert_same([next(stream)], [expected])
    assert stream.epoch == 1


def _build_on_rank(prefixes: dict, model: str, cache_dir: str) -> dict:
    ctx = distributed.initialize(ParallelConfig(), seed=1)
    try:
        datasets = build_sample_datasets("encoder", prefixes, SentencePieceTokenizer(model),
                                         DataConfig(), (200, 20, 0), 7, cache_dir)
        batch = next(BatchStream(datasets.train, 4, dp_rank=ctx.rank, dp_size=ctx.world_size))
        return {"first": _first_samples(datasets, "text", 8), "batch": batch["text"].numpy()}
    finally:
        distributed.shutdown()


def test_two_ranks_share_one_cache_and_read_disjoint_batches(tmp_path):
    corpus = prepared_corpus()
    rank0, rank1 = run_ranks(_build_on_rank, 2, corpus.prefixes, str(corpus.tokenizer_model),
                             str(tmp_path), timeout=120)
    assert np.array_equal(rank0["first"], rank1["first"])
    assert np.array_equal(rank0["batch"], rank0["first"][:4])
    assert np.array_equal(rank1["batch"], rank1["first"][4:8])
    assert len(list((tmp_path / "sample_index").iterdir())) == 1
