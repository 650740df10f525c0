"""Run metrics: one JSON object per line in RUN/metrics.jsonl, the same to TensorBoard, and a
readable line on stdout. Only the main rank writes."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional


def _format(key: str, value: Any) -> str:
    if isinstance(value, float):
        if key == "lr" or key.endswith("flops"):
            return f"{key} {value:.3e}"
        if key in ("loss", "grad_norm") or math.isnan(value) or abs(value) < 100:
            return f"{key} {value:.4f}"
        return f"{key} {value:,.0f}"
    return f"{key} {value}"


def read_metrics(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


class MetricsLogger:
    """Appends to metrics.jsonl. A run resumed at step N first drops the lines of steps after N
    (written before the interruption), so the file reads as one uninterrupted run."""

    STDOUT_KEYS = ("loss", "encoder_mlm_loss", "lr", "grad_norm", "tokens_per_s",
                   "consumed_tokens", "total_flops")

    def __init__(self, run_dir: Path, *, enabled: bool, tensorboard: bool, start_step: int = 0):
        self.enabled = enabled
        self._file = None
        self._tb = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "metrics.jsonl"
        if path.exists():
            # A fresh start (step 0) replaces an old file entirely.
            kept = [r for r in read_metrics(path) if 0 < start_step and r["step"] <= start_step]
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
            tmp.replace(path)
        self._file = open(path, "a", encoding="utf-8", buffering=1)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1)

    def log(self, record: dict[str, Any], *, total_steps: Optional[int] = None) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(record, sort_keys=False) + "\n")
        step = record["step"]
        split = record.get("split", "train")
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) \
                        and key != "step":
                    self._tb.add_scalar(f"{split}/{key}", value, step)
        shown = [_format(k, record[k]) for k in self.STDOUT_KEYS if k in record]
        extra = [f"{k} {v}" for k, v in record.items() if k in ("event", "trainable")]
        where = f"{step}/{total_steps}" if total_steps else str(step)
        print(f"[{split}] step {where} | " + " | ".join(shown + extra), file=sys.stdout,
              flush=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


@dataclass
class Window:
    """Training steps since the last log line: their losses are averaged and their time
    gives the throughput (training-step time only, not evaluation or checkpointing)."""

    steps: int = 0
    finite: int = 0
    loss_sum: float = 0.0
    seconds: float = 0.0

    def add(self, loss: float, seconds: float) -> None:
        self.steps += 1
        self.seconds += seconds
        if math.isfinite(loss):
            self.finite += 1
            self.loss_sum += loss

    def mean_loss(self) -> float:
        return self.loss_sum / self.finite
