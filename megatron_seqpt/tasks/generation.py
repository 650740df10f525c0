"""Batched text generation with the project's T5 model: greedy and beam search.

Sources are sorted by length and batched (less padding; the ranks of a launch share the
batches, ``rank_share``); each batch runs the encoder once, then the decoder one token per step.
With the cache (the default) a step runs megatron-core's own embedding (at the token's
position), decoder block and output head on the newest tokens only: megatron-core's static
inference context keeps the self-attention keys and values, and the decoder's cross-attention
(models/decoder_cache.py) keeps its keys and values, computed from the encoder output at the
first step. Without the cache every step runs ``T5Model.forward`` over the whole prefix: the
reference the cache is tested against.

Rows whose source is finished leave the batch. Pad and the decoder start token are never
generated, nor ids past the tokenizer's vocabulary (the model's is padded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Protocol, Union

import torch
from megatron.core import parallel_state
from megatron.core.datasets.t5_dataset import T5MaskedWordPieceDataset
from megatron.core.models.T5.t5_model import T5Model
from megatron.core.transformer.dot_product_attention import DotProductAttention

from megatron_seqpt.errors import UserError
from megatron_seqpt.models.decoder_cache import CachedCrossAttention, DecoderInferenceContext
from megatron_seqpt.runtime import cpu_compat
from megatron_seqpt.runtime.rank_share import shared_batches

Mask = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]


@dataclass
class GenerationConfig:
    beam_size: int = 1
    length_penalty: float = 1.0   # beam score = sum logprob / (generated length ** length_penalty)
    max_new_tokens: int = 64
    min_new_tokens: int = 0       # eos is not generated before this many tokens
    use_cache: bool = True
    batch_size: int = 32          # sources per batch

    def __post_init__(self) -> None:
        if self.beam_size < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("beam_size, batch_size and max_new_tokens must be at least 1")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError("min_new_tokens must lie between 0 and max_new_tokens")


@dataclass(frozen=True)
class _Tokens:
    bos: int
    eos: int
    pad: int
    vocab_size: Optional[int]


def generate(model: torch.nn.Module, sources: list[list[int]], *, bos: int, eos: int, pad: int,
             config: GenerationConfig, vocab_size: Optional[int] = None) -> list[list[int]]:
    """Generated ids per source, without the start token and the final eos; stops at eos or
    after ``config.max_new_tokens``. ``vocab_size``: the tokenizer's (ids from there on are
    never generated). Runs in eval mode without gradients; the model's mode is restored. In a
    process group every data-parallel rank calls it with the same sources: they share the
    batches and each returns all the results."""
    t5 = _unwrapped(model)
    tokens = _Tokens(bos, eos, pad, vocab_size)
    _check(t5, sources, tokens, config)
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]), reverse=True)
    training = t5.training
    t5.eval()
    try:
        with torch.inference_mode(), cpu_compat.suspended():
            return shared_batches(order, config.batch_size, lambda batch: _generate_batch(
                t5, [sources[i] for i in batch], tokens, config))
    finally:
        t5.train(training)


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    while hasattr(model, "module"):  # DDP, Float16Module
        model = model.module
    return model


def _check(t5: torch.nn.Module, sources: list[list[int]], tokens: _Tokens,
           config: GenerationConfig) -> None:
    if not isinstance(t5, T5Model) or not (t5.pre_process and t5.post_process):
        raise ValueError(f"generation needs a whole megatron-core T5Model, got {type(t5).__name__}")
    if parallel_state.get_tensor_model_parallel_world_size() != 1:
        raise ValueError("generation runs without tensor parallelism (each rank holds the "
                         "whole model)")
    if tokens.pad != 0:
        raise ValueError("megatron-core's T5 masks take id 0 as padding; pad must be 0")
    if config.use_cache and not all(isinstance(layer.cross_attention, CachedCrossAttention)
                                    for layer in t5.decoder.layers):
        raise ValueError("the cached decoder needs the project's decoder layer spec "
                         "(models/decoder_cache.py); build the model with models/builder.py")
    longest = max((len(s) for s in sources), default=1)
    if min((len(s) for s in sources), default=1) == 0:
        raise ValueError("every source needs at least one token")
    if max(longest, config.max_new_tokens) > t5.max_sequence_length:
        raise UserError(f"sources of up to {longest} tokens and {config.max_new_tokens} new "
                        f"tokens do not fit the model's {t5.max_sequence_length} positions "
                        "(model.max_position_embeddings); lower --max-new-tokens "
                        "(task.generation.max_new_tokens) or shorten the sources")


def _attention_masks(encoder_tokens: torch.Tensor, decoder_tokens: torch.Tensor,
                     local: bool) -> tuple[torch.Tensor, Optional[torch.Tensor], Mask]:
    """Encoder, decoder and cross-attention masks in training's layouts (megatron-core's T5
    masks for the local or the transformer-engine layers), True = masked."""
    return T5MaskedWordPieceDataset.config_attention_mask(
        encoder_tokens, decoder_tokens, encoder_tokens == 0, decoder_tokens == 0,
        use_local=local)


def _rows(mask: Mask, index: torch.Tensor) -> Mask:
    if isinstance(mask, tuple):
        return tuple(part[index] for part in mask)
    return mask[index]


class _Steps(Protocol):
    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits [n, V] after appending ``tokens`` [n] to each row's prefix."""

    def select(self, index: torch.Tensor, same_sources: bool) -> None:
        """Keep rows ``index`` in that order; ``same_sources``: every row keeps its source
        (beams reordered), so what depends only on the source stays as it is."""


class _CachedSteps:
    """The newest tokens through megatron-core's embedding, decoder and head, with the cache."""

    def __init__(self, t5: T5Model, encoded: torch.Tensor, cross_mask: Mask, max_steps: int):
        self.t5 = t5
        self.encoded: Optional[torch.Tensor] = encoded  # read at the first step only
        self.cross_mask = cross_mask
        self.context = DecoderInferenceContext(encoded.shape[1], max_steps)
        self.output_weight = t5.shared_embedding_or_output_weight()

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        context = self.context
        position = torch.full_like(tokens, context.sequence_len_offset)
        hidden = self.t5.embedding(input_ids=tokens[:, None], position_ids=position[:, None])
        hidden = self.t5.decoder(hidden_states=hidden, attention_mask=None,
                                 context=self.encoded, context_mask=self.cross_mask,
                                 inference_context=context)
        # The cross-attention has its keys and values now; megatron-core attends every cached
        # self-attention position from here on (no mask: the decoder prefix has no padding).
        self.encoded = None
        context.increment_sequence_len_offset(1)
        context.enable_decode_mode()
        return self.t5.lm_head(hidden, word_embeddings_weight=self.output_weight)[0]

    def select(self, index: torch.Tensor, same_sources: bool) -> None:
        self.context.select_rows(index, cross=not same_sources)
        if not same_sources:
            self.cross_mask = _rows(self.cross_mask, index)


class _FullSteps:
    """``T5Model.forward`` over the whole prefix at every step (no cache)."""

    def __init__(self, t5: T5Model, encoder_tokens: torch.Tensor, encoded: torch.Tensor,
                 local: bool):
        self.t5, self.encoder_tokens, self.encoded, self.local = \
            t5, encoder_tokens, encoded, local
        self.prefix = encoder_tokens.new_zeros((encoder_tokens.shape[0], 0))

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        self.prefix = torch.cat([self.prefix, tokens[:, None]], dim=1)
        masks = _attention_masks(self.encoder_tokens, self.prefix, self.local)
        logits = self.t5(self.encoder_tokens, self.prefix, *masks,
                         encoder_hidden_states=self.encoded)
        return logits[:, -1]

    def select(self, index: torch.Tensor, same_sources: bool) -> None:
        self.prefix = self.prefix[index]
        if not same_sources:
            self.encoder_tokens, self.encoded = self.encoder_tokens[index], self.encoded[:, index]


def _generate_batch(t5: T5Model, sources: list[list[int]], tokens: _Tokens,
                    config: GenerationConfig) -> list[list[int]]:
    device = t5.shared_embedding_or_output_weight().device
    local = isinstance(t5.decoder.layers[0].self_attention.core_attention, DotProductAttention)
    width = max(len(s) for s in sources)
    encoder_tokens = torch.tensor([s + [tokens.pad] * (width - len(s)) for s in sources],
                                  dtype=torch.long, device=device)
    start = torch.full((len(sources), 1), tokens.bos, dtype=torch.long, device=device)
    encoder_mask, _, cross_mask = _attention_masks(encoder_tokens, start, local)
    encoded = t5(encoder_tokens, None, encoder_mask, None, None, output_encoder_hidden_only=True)
    beams = config.beam_size
    if beams > 1:  # each source's rows, one per beam, next to each other
        rows = torch.arange(len(sources), device=device).repeat_interleave(beams)
        encoder_tokens, encoded, cross_mask = \
            encoder_tokens[rows], encoded[:, rows], _rows(cross_mask, rows)
    steps: _Steps = _CachedSteps(t5, encoded, cross_mask, config.max_new_tokens) \
        if config.use_cache else _FullSteps(t5, encoder_tokens, encoded, local)
    scorer = _Scorer(t5.vocab_size, tokens, config.min_new_tokens, device)
    if beams == 1:
        return _greedy(steps, len(sources), scorer, tokens, config)
    return _beam_search(steps, len(sources), scorer, tokens, config)


class _Scorer:
    """Log-probabilities over the tokens that may come next (the others get -inf)."""

    def __init__(self, model_vocab: int, tokens: _Tokens, min_new_tokens: int,
                 device: torch.device):
        self.bias = torch.zeros(model_vocab, device=device)
        self.bias[[tokens.pad, tokens.bos]] = -math.inf
        if tokens.vocab_size is not None:
            self.bias[tokens.vocab_size:] = -math.inf
        self.early_bias = self.bias.clone()
        self.early_bias[tokens.eos] = -math.inf
        self.min_new_tokens = min_new_tokens

    def logits(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        return logits.float() + (self.early_bias if step < self.min_new_tokens else self.bias)

    def log_probs(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        return torch.log_softmax(self.logits(logits, step), dim=-1)


def _greedy(steps: _Steps, count: int, scorer: _Scorer, tokens: _Tokens,
            config: GenerationConfig) -> list[list[int]]:
    outputs: list[list[int]] = [[] for _ in range(count)]
    rows = list(range(count))  # the output each row of the batch feeds
    chosen = torch.full((count,), tokens.bos, dtype=torch.long,
                        device=scorer.bias.device)
    for step in range(config.max_new_tokens):
        chosen = scorer.logits(steps.logits(chosen), step).argmax(dim=-1)
        keep = []
        for row, token in enumerate(chosen.tolist()):
            if token != tokens.eos:
                outputs[rows[row]].append(token)
                keep.append(row)
        if not keep:
            break
        if len(keep) < len(rows):
            index = torch.tensor(keep, device=chosen.device)
            steps.select(index, same_sources=False)
            chosen, rows = chosen[index], [rows[row] for row in keep]
    return outputs


class _Finished:
    """The best ``size`` finished hypotheses of one source, by length-penalised score (the
    length counts the new tokens, eos included)."""

    def __init__(self, size: int, length_penalty: float):
        self.size, self.length_penalty = size, length_penalty
        self.best: list[tuple[float, list[int]]] = []

    def add(self, tokens: list[int], logprob: float, length: int) -> None:
        self.best.append((logprob / length ** self.length_penalty, tokens))
        self.best.sort(key=lambda hypothesis: -hypothesis[0])  # stable: earlier wins ties
        del self.best[self.size:]

    def done(self, best_live: float, length: int, max_length: int) -> bool:
        """Full, and no live beam (the best at ``best_live`` after ``length`` tokens) can beat
        the worst kept one: log-probabilities only fall, so a live beam's best reachable score
        has the longest length (positive penalty) or the shortest (otherwise)."""
        if len(self.best) < self.size:
            return False
        reach = max_length if self.length_penalty > 0 else length + 1
        return self.best[-1][0] >= best_live / reach ** self.length_penalty


def _beam_search(steps: _Steps, count: int, scorer: _Scorer, tokens: _Tokens,
                 config: GenerationConfig) -> list[list[int]]:
    beams, device = config.beam_size, scorer.bias.device
    finished = [_Finished(beams, config.length_penalty) for _ in range(count)]
    sources = list(range(count))  # the live sources, in row order (``beams`` rows each)
    histories: list[list[int]] = [[] for _ in range(count * beams)]
    # At the start a source's beams are the same prefix: only the first one is live.
    scores = torch.tensor([0.0] + [-math.inf] * (beams - 1), device=device).repeat(count)
    chosen = torch.full((count * beams,), tokens.bos, dtype=torch.long, device=device)
    for step in range(config.max_new_tokens):
        length, last = step + 1, step + 1 == config.max_new_tokens
        log_probs = scorer.log_probs(steps.logits(chosen), step)
        vocab = log_probs.shape[-1]
        candidates = (scores[:, None] + log_probs).view(len(sources), beams * vocab)
        # 2 x beams candidates leave at least ``beams`` that do not end (one eos per beam).
        top_scores, top_ids = candidates.topk(2 * beams, dim=1)
        kept, origins, next_tokens, next_scores = [], [], [], []
        for i, (source, row_scores, row_ids) in enumerate(
                zip(sources, top_scores.tolist(), top_ids.tolist())):
            live = []
            for score, flat in zip(row_scores, row_ids):
                origin, token = i * beams + flat // vocab, flat % vocab
                if token == tokens.eos:
                    finished[source].add(histories[origin], score, length)
                    continue
                live.append((origin, token, score))
                if len(live) == beams:
                    break
            if last:
                for origin, token, score in live:
                    finished[source].add(histories[origin] + [token], score, length)
            elif not finished[source].done(live[0][2], length, config.max_new_tokens):
                kept.append(source)
                for origin, token, score in live:
                    origins.append(origin)
                    next_tokens.append(token)
                    next_scores.append(score)
        if not kept:
            break
        steps.select(torch.tensor(origins, device=device), same_sources=len(kept) == len(sources))
        histories = [histories[o] + [t] for o, t in zip(origins, next_tokens)]
        sources = kept
        scores = torch.tensor(next_scores, device=device)
        chosen = torch.tensor(next_tokens, dtype=torch.long, device=device)
    return [hypotheses.best[0][1] for hypotheses in finished]
