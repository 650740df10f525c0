"""A fast Hugging Face tokenizer from the project's sentencepiece model, with its ids.

transformers builds the ``tokenizers`` pipeline from the sentencepiece model's own settings
(normalizer, dummy prefix, byte fallback), so plain text encodes to the ids
``SentencePieceTokenizer.tokenize`` gives. Its special tokens are registered as Hugging Face
special tokens at their ids: ``<pad>`` 0, ``</s>`` 1, ``<s>`` 2, ``<unk>`` 3, ``<cls>``,
``<sep>``, ``<mask>`` and the sentinels ``<extra_id_N>``. One difference, the Hugging Face
convention: a literal ``<mask>`` (or sentinel) written in the text is that token there, while
the project's tokenizer reads it as text.

The encoder's inputs are ``<cls> text <sep>`` (pairs ``<cls> a <sep> b <sep>``, one token
type), as the project's task models read them; T5's are the text alone.
"""

from __future__ import annotations

from pathlib import Path

from megatron_seqpt.tokenizer import special_tokens as st
from megatron_seqpt.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer

MODEL_INPUTS = ["input_ids", "attention_mask"]


def hf_tokenizer(tokenizer: SentencePieceTokenizer, encoder_inputs: bool,
                 model_max_length: int):
    """A ``PreTrainedTokenizerFast`` equal to ``tokenizer``; ``encoder_inputs``: add
    ``<cls>``/``<sep>`` around the text, as the encoder's inputs have them."""
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter

    proto = sentencepiece_model_pb2.ModelProto.FromString(
        Path(tokenizer.model_file).read_bytes())
    vocab = [(piece.piece, piece.score) for piece in proto.pieces]
    backend = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab, legacy=False)
    if encoder_inputs:
        cls, sep = st.CLS, st.SEP
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:0 {sep}:0",
            special_tokens=[(cls, tokenizer.cls), (sep, tokenizer.sep)])
    sentinels = [tokenizer.piece(i) for i in tokenizer.additional_special_tokens_ids]
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=st.PAD, eos_token=st.EOS, bos_token=st.BOS,
        unk_token=st.UNK, cls_token=st.CLS, sep_token=st.SEP, mask_token=st.MASK,
        additional_special_tokens=sentinels, model_input_names=MODEL_INPUTS,
        model_max_length=model_max_length, padding_side="right", truncation_side="right")
