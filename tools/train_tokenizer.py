"""Train the shared multilingual sentencepiece model; the same as ``seqpt train-tokenizer``.

    python tools/train_tokenizer.py --input corpus.jsonl --vocab-size 32000 --output-prefix tok
"""

import sys
from pathlib import Path

# Run from a clone without installing: the package is next to tools/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_seqpt.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train-tokenizer", *sys.argv[1:]], prog=Path(__file__).name))
