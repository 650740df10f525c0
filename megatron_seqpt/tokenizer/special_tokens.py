"""Special tokens every model of this project needs, reserved at fixed places in the vocabulary.

sentencepiece's own control ids come first (pad 0, as megatron-core's T5 masks assume; then
eos, bos, unk); cls/sep/mask and the T5 sentinels follow as control symbols: a literal "<mask>"
in the text is ordinary text, never the mask id (they decode to nothing; ``piece()`` names them).
"""

PAD = "<pad>"
EOS = "</s>"
BOS = "<s>"
UNK = "<unk>"
CLS = "<cls>"
SEP = "<sep>"
MASK = "<mask>"

PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3

DEFAULT_NUM_SENTINELS = 100


def sentinel(index: int) -> str:
    """T5's name for the index-th sentinel (``<extra_id_0>`` replaces the first masked span)."""
    return f"<extra_id_{index}>"


def reserved_symbols(num_sentinels: int) -> list[str]:
    """The symbols after sentencepiece's own four, in vocabulary order."""
    return [CLS, SEP, MASK] + [sentinel(i) for i in range(num_sentinels)]
