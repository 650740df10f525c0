"""Checkpoint conversions; the same as ``seqpt convert``, ``seqpt export`` and ``seqpt import``.

    python tools/convert_checkpoint.py warm-start --encoder runs/enc --config t5.yaml --output w
    python tools/convert_checkpoint.py extract-encoder --seq2seq runs/t5 --output enc
    python tools/convert_checkpoint.py export hf --run-dir runs/t5 --output hf/t5
    python tools/convert_checkpoint.py import hf --model hf/t5 --output t5_weights
"""

import sys
from pathlib import Path

# Run from a clone without installing: the package is next to tools/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_seqpt.cli import main  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] in (["export"], ["import"]):
        sys.exit(main(argv, prog=f"{Path(__file__).name} {argv[0]}"))
    sys.exit(main(["convert", *argv], prog=Path(__file__).name))
