"""The demo's report: report.json (numbers), report.md (for people), loss_curves.png
(validation loss against executed FLOPs for both seq2seq runs)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from megatron_seqpt.config import RunConfig
from megatron_seqpt.recipes import accounting
from megatron_seqpt.recipes.curves import flops_to_reach, pair_saving, valid_curve

LABELS = {"encoder": "MLM encoder", "t5_warm": "T5 warm-started from the encoder",
          "t5_scratch": "T5 from scratch (baseline)"}


@dataclass
class StageResult:
    stage: str
    steps: int
    tokens: int
    flops: float
    train_seconds: float
    wall_seconds: Optional[float]
    final_valid_loss: float
    # (step, executed FLOPs so far, validation loss) at each evaluation.
    valid_curve: list[tuple[int, float, float]]

    @classmethod
    def from_run(cls, stage: str, run_dir: Path, wall_seconds: Optional[float]
                 ) -> "StageResult":
        result = json.loads((run_dir / "result.json").read_text())
        curve = valid_curve(run_dir)
        return cls(stage, result["step"], result["consumed_tokens"], result["flops"],
                   result["train_seconds"], wall_seconds, curve[-1][2], curve)


def compute_to_target(encoder: StageResult, warm: StageResult, scratch: StageResult) -> dict:
    """Where the warm-started T5 first reaches the from-scratch T5's final validation loss,
    and what the pair (encoder + T5) cost at that point against the pair from scratch."""
    target = scratch.final_valid_loss
    reached = flops_to_reach([(f, loss) for _, f, loss in warm.valid_curve], target)
    return {"target_valid_loss": target, "warm_flops_to_target": reached,
            "pair_saving_to_target": None if reached is None else pair_saving(
                encoder.flops, reached, scratch.flops)}


def write_report(output: Path, results: list[StageResult], downstream: dict[str, dict],
                 data_seconds: float, total_seconds: float,
                 configs: dict[str, RunConfig]) -> dict:
    by_stage = {r.stage: r for r in results}
    enc, warm, scratch = (by_stage[s] for s in ("encoder", "t5_warm", "t5_scratch"))
    predicted = accounting.compare(configs["encoder"], configs["t5_scratch"], configs["t5_warm"])
    report = {
        "stages": {r.stage: {k: v for k, v in asdict(r).items() if k != "stage"}
                   for r in results},
        "data_seconds": data_seconds,
        "total_seconds": total_seconds,
        "compute_saving": pair_saving(enc.flops, warm.flops, scratch.flops),
        "compute_saving_predicted": predicted.saving,
        "compute_to_target": compute_to_target(enc, warm, scratch),
        "train_time_saving": pair_saving(enc.train_seconds, warm.train_seconds,
                                         scratch.train_seconds),
        "seq2seq_valid_loss": {"warm_start": warm.final_valid_loss,
                               "scratch": scratch.final_valid_loss},
        "downstream": downstream,
    }
    (output / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    _plot(output / "loss_curves.png", warm, scratch)
    (output / "report.md").write_text(_markdown(report, results, configs), encoding="utf-8")
    return report


def less_or_more(share: float) -> str:
    """A saving as "12.3% less" or, when negative, "4.5% more"."""
    return f"{abs(share):.1%} {'less' if share >= 0 else 'more'}"


def _plot(path: Path, warm: StageResult, scratch: StageResult) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2))
    for result, style in ((scratch, "o--"), (warm, "s-")):
        flops = [f for _, f, _ in result.valid_curve]
        losses = [loss for _, _, loss in result.valid_curve]
        axes.plot(flops, losses, style, label=LABELS[result.stage])
    axes.set_xlabel("executed training FLOPs (seq2seq stage)")
    axes.set_ylabel("validation loss (span corruption)")
    axes.set_title("Warm-started vs from-scratch T5 on the built-in corpus")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _markdown(report: dict, results: list[StageResult], configs: dict[str, RunConfig]) -> str:
    warm_config = configs["t5_warm"]
    fraction = warm_config.freeze.encoder.unfreeze_at_fraction
    target = report["compute_to_target"]
    lines = [
        "# Sequential pre-training demo",
        "",
        "Encoder first, then seq2seq: an MLM encoder is trained, a T5 model is warm-started from",
        f"it with embeddings and encoder frozen for the first {fraction:.0%} of its steps, and",
        "a T5 model trained from scratch with the same step budget is the baseline.",
        "",
        "| stage | steps | tokens | FLOPs | train time (s) | final valid loss |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {LABELS[r.stage]} | {r.steps} | {r.tokens:,} | {r.flops:.3e} | "
                     f"{r.train_seconds:.0f} | {r.final_valid_loss:.3f} |")
    loss = report["seq2seq_valid_loss"]
    if target["warm_flops_to_target"] is None:
        reached = (f"- Compute to the same quality: the warm-started T5 never reached the "
                   f"from-scratch T5's final validation loss ({target['target_valid_loss']:.3f}) "
                   "within its steps.")
    else:
        reached = (f"- Compute to the same quality: the warm-started T5 first reached the "
                   f"from-scratch T5's final validation loss ({target['target_valid_loss']:.3f}) "
                   f"at {target['warm_flops_to_target']:.3e} FLOPs; the pair to that point cost "
                   f"**{less_or_more(target['pair_saving_to_target'])}** than the pair from "
                   "scratch (measured on the validation curve).")
    lines += [
        "",
        f"- Compute for both models after the same step budget, encoder + warm-started T5 "
        f"against encoder + T5 from scratch: **{less_or_more(report['compute_saving'])}** "
        f"(executed FLOPs; the accounting from the configs predicts "
        f"{report['compute_saving_predicted']:.1%}).",
        reached,
        f"- Training time: {less_or_more(report['train_time_saving'])} (wall-clock: noisy "
        "where the machine is shared).",
        f"- T5 validation loss after the same number of steps: warm start "
        f"{loss['warm_start']:.3f}, from scratch {loss['scratch']:.3f}.",
        f"- Data preparation {report['data_seconds']:.0f} s; whole demo "
        f"{report['total_seconds']:.0f} s.",
        "",
        "## Downstream",
        "",
        "| model | task | metric | fine-tuned | baseline |",
        "|---|---|---|---:|---:|",
    ]
    for stage, scored in report["downstream"].items():
        for name, value in scored["metrics"].items():
            lines.append(f"| {LABELS[stage]} | {scored['task']} | {name} | {value:.3f} | "
                         f"{scored['baseline']['metrics'][name]:.3f} |")
        lines.append(f"| {LABELS[stage]} | {scored['task']} | validation loss (lower is "
                     f"better) | {scored['valid_loss']:.3f} | - |")
    names = sorted({s["baseline"]["name"] for s in report["downstream"].values()})
    lines += [
        "",
        f"Baselines: {'; '.join(names)}. Test splits of the built-in tasks; seqpt evaluate "
        "wrote each fine-tuned run's eval.json. The validation loss is the fine-tuning run's at "
        "its end (for seq2seq, teacher-forced per target piece): it tells apart models that do "
        "not yet generate the task.",
        "",
        "![validation loss against FLOPs](loss_curves.png)",
        "",
        "Each stage's run directory holds its resolved config.yaml, metrics.jsonl and",
        "checkpoints; report.json has these numbers and the validation curves.",
        "",
    ]
    return "\n".join(lines)
