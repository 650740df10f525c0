"""The T5 attention masks each layer implementation receives mean the same thing: True where a
key is padding (megatron-core's convention for both its local layers and transformer-engine).
transformer-engine itself is not needed: its mask layout is built for a given TE version."""

import torch

from megatron_seqpt.models.forward import t5_attention_masks
from megatron_seqpt.models.specs import LayerImpl, TorchNorm


def _batch():
    # Two right-padded samples: encoder lengths 3 and 5, decoder lengths 2 and 4.
    text_enc = torch.tensor([[7, 8, 9, 0, 0], [7, 8, 9, 10, 11]])
    text_dec = torch.tensor([[2, 5, 0, 0], [2, 5, 6, 1]])
    return {"text_enc": text_enc, "text_dec": text_dec,
            "enc_mask": (text_enc != 0).long(), "dec_mask": (text_dec != 0).long()}


def test_transformer_engine_masks_mask_padding_like_the_local_ones():
    batch = _batch()
    local_enc, _, local_cross = t5_attention_masks(batch, LayerImpl("local", TorchNorm))
    te_enc, te_dec, (te_cross_q, te_cross_kv) = t5_attention_masks(
        batch, LayerImpl("transformer_engine", TorchNorm), te_version="2.2.0")
    padding = batch["text_enc"] == 0
    # Local [b, 1, sq, sk]: at a real query, exactly the padded keys are masked.
    assert torch.equal(local_enc[:, 0, 0, :], padding)
    # transformer-engine [b, 1, 1, s] padding masks, True = masked, for encoder and cross keys.
    assert te_enc.dtype == torch.bool and torch.equal(te_enc[:, 0, 0, :], padding)
    assert torch.equal(te_cross_kv[:, 0, 0, :], padding)
    assert torch.equal(te_cross_q[:, 0, 0, :], batch["text_dec"] == 0)
    assert torch.equal(local_cross[:, 0, 0, :], padding)
    assert te_dec is None  # the decoder's self-attention is causal
