"""Checkpoint conversions of the recipes; the same as ``seqpt convert``.

    python tools/convert_checkpoint.py warm-start --encoder runs/enc --config t5.yaml --output w
    python tools/convert_checkpoint.py extract-encoder --seq2seq runs/t5 --output enc
"""

import sys
from pathlib import Path

# Run from a clone without installing: the package is next to tools/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_seqpt.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]], prog=Path(__file__).name))
