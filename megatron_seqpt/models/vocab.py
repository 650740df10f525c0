"""The model vocabulary: the tokenizer's, rounded up for efficient and shardable matmuls."""

import math


def padded_vocab_size(vocab_size: int, tensor_parallel: int) -> int:
    """Round the vocabulary up as Megatron-LM does (to 128 per tensor-parallel shard: faster
    matmuls, equal shards), but to at least a multiple of 1024, so that checkpoints keep their
    embedding shape under any tensor-parallel size up to 8."""
    step = max(128 * tensor_parallel, 1024)
    return int(math.ceil(vocab_size / step) * step)
