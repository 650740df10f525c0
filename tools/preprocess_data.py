"""Tokenize a corpus into megatron-core indexed datasets; the same as ``seqpt preprocess``.

    python tools/preprocess_data.py --input corpus.jsonl --output-prefix data/corpus \
        --tokenizer-model tok.model --workers 8 --split-sentences
"""

import sys
from pathlib import Path

# Run from a clone without installing: the package is next to tools/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_seqpt.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["preprocess", *sys.argv[1:]], prog=Path(__file__).name))
