"""``seqpt generate``: generate text with a T5 run (pre-trained or fine-tuned).

    seqpt generate --run-dir RUN --input sources.txt [--output out.txt] [--beam-size 4]

Input: one source per line (``-`` reads stdin), or a jsonl file whose records hold ``source``
(output: the records with ``prediction`` added). Output: one generated text per line.
"""

import argparse
import json
import math
import sys
from pathlib import Path

from megatron_seqpt.errors import UserError
from megatron_seqpt.files import checked_output_file, publish_files
from megatron_seqpt.text.corpus import check_not_compressed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", dest="run", required=True, metavar="T5_RUN",
                        help="a T5 run directory (pre-training or seq2seq fine-tuning)")
    parser.add_argument("--input", required=True, metavar="FILE",
                        help="one source per line, '-' for stdin, or a .jsonl file with "
                             "'source' in every record")
    parser.add_argument("--output", metavar="FILE", help="where to write (default: stdout)")
    parser.add_argument("--step", type=int, help="the checkpoint at this step (default: latest)")
    parser.add_argument("--beam-size", type=int, default=1, help="1: greedy search (default)")
    parser.add_argument("--length-penalty", type=float, default=1.0,
                        help="beam scores are log-probabilities over length ** this")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32, help="sources per batch")
    parser.add_argument("--no-cache", action="store_true",
                        help="recompute the decoder over the whole prefix at every step "
                             "(slower; the reference the key/value cache is checked against)")


def _read(path: str) -> tuple[list[str], list[dict] | None]:
    """(sources, jsonl records or None)."""
    if path == "-":
        return _non_empty([line.rstrip("\n") for line in sys.stdin], "stdin"), None
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--input {path} does not exist")
    check_not_compressed(file)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 (byte {err.start + 1}); convert it to UTF-8") \
            from None
    if not file.name.endswith(".jsonl"):
        return _non_empty(lines, path), None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{number}: not valid JSON ({err.msg}); give one JSON "
                            "object per line, or a text file with one source per line") from None
        if not isinstance(record, dict) or not isinstance(record.get("source"), str) \
                or not record["source"].strip():
            raise UserError(f"{path}:{number}: expected an object with a non-empty string "
                            "'source'")
        records.append(record)
    return [r["source"] for r in records], records


def _non_empty(lines: list[str], where: str) -> list[str]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise UserError(f"{where}:{number}: empty line; give one source per line")
    return lines


def run(args: argparse.Namespace) -> int:
    from megatron_seqpt.runtime import launch_env
    from megatron_seqpt.tasks.generate_run import generate_from_run
    from megatron_seqpt.tasks.generation import GenerationConfig

    for name in ("beam_size", "max_new_tokens", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if not math.isfinite(args.length_penalty):
        raise UserError(f"--length-penalty {args.length_penalty} ranks no beam; give a "
                        "number (1.0: the log-probability per token)")
    output = checked_output_file(Path(args.output)) if args.output else None
    first = launch_env.detect().rank == 0
    # stdin reaches one process of a launch: the first rank reads it and hands the sources on.
    sources, records = _read(args.input) if first or args.input != "-" else (None, None)
    generated = generate_from_run(args.run, sources, GenerationConfig(
        beam_size=args.beam_size, length_penalty=args.length_penalty,
        max_new_tokens=args.max_new_tokens, use_cache=not args.no_cache,
        batch_size=args.batch_size), step=args.step)
    if records is not None:
        lines = [json.dumps({**r, "prediction": g}, ensure_ascii=False)
                 for r, g in zip(records, generated)]
    else:
        lines = [g.replace("\n", " ") for g in generated]
    text = "".join(line + "\n" for line in lines)
    if not first:  # every rank has the whole output
        return 0
    if output:
        publish_files({output: text.encode("utf-8")})
    else:
        sys.stdout.write(text)
    return 0
