"""Scripts written without spaces between words (Chinese, Japanese, Thai, Lao, Khmer, ...).

In such text sentencepiece puts ``▁`` only at the start of a sentence, so the ``▁`` rule would
make a whole sentence one "word". For whole-word masking each piece of these scripts counts as a
word of its own. Korean (hangul) is written with spaces, so the ``▁`` rule already holds for it.
"""

from __future__ import annotations

import bisect

# Inclusive code point ranges, sorted.
_RANGES = (
    (0x0E00, 0x0EFF),    # Thai, Lao
    (0x0F00, 0x0FFF),    # Tibetan
    (0x1000, 0x109F),    # Myanmar
    (0x1780, 0x17FF),    # Khmer
    (0x19E0, 0x19FF),    # Khmer symbols
    (0x3000, 0x30FF),    # CJK symbols and punctuation, hiragana, katakana
    (0x3100, 0x312F),    # bopomofo
    (0x31F0, 0x31FF),    # katakana phonetic extensions
    (0x3400, 0x4DBF),    # CJK extension A
    (0x4E00, 0x9FFF),    # CJK unified ideographs
    (0xF900, 0xFAFF),    # CJK compatibility ideographs
    (0xFF00, 0xFFEF),    # half- and full-width forms
    (0x20000, 0x3134F),  # CJK extensions B-G
)
_STARTS = [low for low, _ in _RANGES]


def is_no_space_char(char: str) -> bool:
    code = ord(char)
    i = bisect.bisect_right(_STARTS, code) - 1
    return i >= 0 and code <= _RANGES[i][1]


def starts_with_no_space_script(piece: str) -> bool:
    """True when the piece's first character (after ``▁``) belongs to such a script."""
    text = piece.lstrip("\u2581")
    return bool(text) and is_no_space_char(text[0])
