"""The reproduction's report: report.json (every number), report.md (the tables and one verdict
line per claim), loss_vs_flops.png and task_scores.png."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

from megatron_seqpt.recipes import findings
from megatron_seqpt.recipes.curves import flops_to_reach, pair_saving, valid_curve
from megatron_seqpt.recipes.findings import Scores
from megatron_seqpt.recipes.reproduce_grid import (
    ENCODER_ROWS,
    ENCODER_TASKS,
    EQUAL_COMPUTE_ROW,
    EXTRACTED,
    PRETRAIN_ROWS,
    SEQ2SEQ_ROWS,
    SEQ2SEQ_TASK,
    UNFREEZE_FRACTION,
    Scale,
    stage_dir,
)

# The figure each task kind is judged by (the others are in report.json).
MAIN_METRIC = {"classification": "accuracy", "tagging": "macro_f1", "seq2seq": "chrf"}
PAPER_SAVING = 0.27
WARM_ROWS = ("t5_warm_frozen", "t5_warm_unfreeze", "t5_warm_unfreeze_emb")


def _pretraining(root: Path, timings: dict) -> dict:
    rows = {}
    for row in PRETRAIN_ROWS:
        curve = valid_curve(root / stage_dir(row))
        rows[row] = {"what": PRETRAIN_ROWS[row], "steps": curve[-1][0],
                     "flops": curve[-1][1], "final_valid_loss": curve[-1][2],
                     "seconds": timings.get(stage_dir(row)),
                     "valid_curve": [list(point) for point in curve]}
    return rows


def _task_scores(root: Path, rows: tuple[str, ...], tasks: tuple[str, ...],
                 modes: tuple[str, ...]) -> dict:
    """(row -> "task_mode" -> metric -> values over seeds, plus the baseline's)."""
    scores: dict = {}
    for row in rows:
        for task in tasks:
            for mode in modes:
                runs = sorted((root / "finetune" / row / f"{task}_{mode}").glob("seed*"))
                results = [json.loads((r / "eval.json").read_text()) for r in runs
                           if (r / "eval.json").is_file()]
                if not results:
                    continue
                metrics = {name: [r["metrics"][name] for r in results]
                           for name in results[0]["metrics"]}
                scores.setdefault(row, {})[f"{task}_{mode}"] = {
                    "seeds": len(results), "metrics": metrics,
                    "baseline": results[0]["baseline"]}
    return scores


def _main(scores: dict, row: str, key: str) -> Optional[Scores]:
    task = key.rsplit("_", 1)[0]
    entry = scores.get(row, {}).get(key)
    return Scores(tuple(entry["metrics"][MAIN_METRIC[task]])) if entry else None


def _baseline(scores: dict, row: str, key: str) -> float:
    """The baseline's main metric on the task of ``key``."""
    return scores[row][key]["baseline"]["metrics"][MAIN_METRIC[key.rsplit("_", 1)[0]]]


def _unmeasured(verdict: str, scores: dict, row: str, key: str) -> str:
    if verdict != "not measurable":
        return ""
    entry = scores[row][key]["baseline"]
    return f" (no model beats the baseline, {entry['name']}: {_baseline(scores, row, key):.3f})"


def _compute(pre: dict) -> dict:
    """Pair totals, and the measured saving: where each warm-started T5 first reaches the
    from-scratch T5's final validation loss."""
    encoder, scratch = pre["mlm"]["flops"], pre["t5_scratch"]["flops"]
    target = pre["t5_scratch"]["final_valid_loss"]
    out = {"encoder_flops": encoder, "scratch_t5_flops": scratch,
           "pair_from_scratch": encoder + scratch, "target_valid_loss": target, "warm": {}}
    for row in WARM_ROWS:
        curve = [(flops, loss) for _, flops, loss in pre[row]["valid_curve"]]
        reached = flops_to_reach(curve, target)
        out["warm"][row] = {
            "flops": pre[row]["flops"], "pair": encoder + pre[row]["flops"],
            "pair_saving_at_equal_steps": pair_saving(encoder, pre[row]["flops"], scratch),
            "flops_to_target": reached,
            "pair_saving_to_target": None if reached is None else pair_saving(
                encoder, reached, scratch)}
    return out


def _verdicts(scores: dict, compute: dict, seeds: int) -> dict:
    caveat = "" if seeds > 1 else " (one seed: no spread to judge noise by)"
    verdicts = {}
    # 1. Extracted encoders under-perform the MLM encoder, particularly on sequence labelling.
    mlm_tag = _main(scores, "mlm", "tagging_full")
    mlm_cls = _main(scores, "mlm", "classification_full")
    extracted = [row for row in ENCODER_ROWS if row != "mlm"]
    tagging = [findings.difference(mlm_tag, _main(scores, row, "tagging_full"))
               for row in extracted if mlm_tag and _main(scores, row, "tagging_full")]
    classification = [findings.difference(mlm_cls, _main(scores, row, "classification_full"))
                      for row in extracted if mlm_cls and _main(scores, row, "classification_full")]
    verdict = findings.claim_better(tagging)
    if mlm_tag:
        verdict = findings.measurable(verdict, [mlm_tag], _baseline(scores, "mlm",
                                                                   "tagging_full"))
    particularly = bool(tagging and classification) and (
        sum(d.delta for d in tagging) / len(tagging)
        > sum(d.delta for d in classification) / len(classification))
    verdicts["extracted_encoder_underperforms"] = {
        "verdict": verdict, "tagging_gaps": [d.delta for d in tagging],
        "classification_gaps": [d.delta for d in classification],
        "larger_on_tagging": particularly,
        "line": f"MLM encoder better than every extracted encoder on tagging "
                f"({MAIN_METRIC['tagging']}): {verdict}{caveat}; the gap is "
                f"{'larger' if particularly else 'not larger'} on tagging than on "
                f"classification" + _unmeasured(verdict, scores, "mlm", "tagging_full")}
    # 2. The warm-started T5 (unfrozen partway) matches T5 from scratch on the seq2seq task.
    warm, scratch = (_main(scores, row, f"{SEQ2SEQ_TASK}_full")
                     for row in ("t5_warm_unfreeze", "t5_scratch"))
    if warm and scratch:
        d = findings.difference(warm, scratch)
        verdict = findings.measurable(findings.claim_matches(d), [warm, scratch],
                                      _baseline(scores, "t5_scratch", f"{SEQ2SEQ_TASK}_full"))
        verdicts["warm_start_matches_scratch"] = {
            "verdict": verdict, "delta": d.delta, "noise": d.noise,
            "line": f"warm-started T5 (unfrozen at {UNFREEZE_FRACTION:.0%}) matches T5 from "
                    f"scratch on {SEQ2SEQ_TASK} ({MAIN_METRIC[SEQ2SEQ_TASK]} "
                    f"{warm.describe(2)} vs {scratch.describe(2)}): {verdict}{caveat}"
                    + _unmeasured(verdict, scores, "t5_scratch", f"{SEQ2SEQ_TASK}_full")}
    # 3. Both models for about a quarter less compute.
    measured = compute["warm"]["t5_warm_unfreeze"]["pair_saving_to_target"]
    if measured is None:
        verdict, line = "does not hold", "the warm-started T5 never reached the from-scratch " \
                                         "T5's final validation loss"
    else:
        verdict = "holds" if measured > 0 else "does not hold"
        line = (f"the pair cost {measured:.1%} less compute to reach the from-scratch T5's "
                f"final validation loss (paper: about {PAPER_SAVING:.0%})")
    verdicts["compute_saving"] = {"verdict": verdict, "measured": measured,
                                  "line": f"{line}: {verdict}"}
    return verdicts


def write_report(root: Path, scale_name: str, scale: Scale, seeds: int, timings: dict,
                 seconds: float, tasks: dict[str, str], stage_names: list[str]) -> dict:
    """``seconds``: this invocation's time; ``timings``: seconds per stage over every
    invocation (a resumed grid's stages ran in several)."""
    pre = _pretraining(root, timings)
    encoders = _task_scores(root, ENCODER_ROWS, ENCODER_TASKS, ("full", "probe"))
    seq2seq = _task_scores(root, (*SEQ2SEQ_ROWS, EQUAL_COMPUTE_ROW), (SEQ2SEQ_TASK,),
                           ("full",))
    scores = {**encoders, **seq2seq}
    compute = _compute(pre)
    report = {"scale": scale_name, "settings": dataclasses.asdict(scale), "seeds": seeds,
              "tasks": tasks, "seconds": seconds,
              "stage_seconds": sum(timings.get(name, 0.0) for name in stage_names),
              "pretraining": pre, "encoder_tasks": encoders,
              "seq2seq_tasks": seq2seq, "compute": compute,
              "verdicts": _verdicts(scores, compute, seeds)}
    (root / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    _plot_curves(root / "loss_vs_flops.png", pre)
    _plot_scores(root / "task_scores.png", scores)
    (root / "report.md").write_text(_markdown(report), encoding="utf-8")
    return report


def _cell(scores: dict, row: str, key: str) -> str:
    found = _main(scores, row, key)
    return found.describe() if found else "-"


def _markdown(report: dict) -> str:
    pre, compute, verdicts = report["pretraining"], report["compute"], report["verdicts"]
    scores = {**report["encoder_tasks"], **report["seq2seq_tasks"]}
    s = report["settings"]
    lines = [
        f"# Reproduction at scale {report['scale']}", "",
        f"Hidden size {s['hidden']}, {s['layers']} layers per stack, "
        f"{s['encoder_steps']} MLM / {s['t5_steps']} T5 steps, global batch "
        f"{s['global_batch']}; fine-tuning {_schedule(s['finetune'])}"
        + (f", tagging {_schedule(s['tagging'])}" if s.get("tagging") else "")
        + f"; {report['seeds']} fine-tuning seed(s) per task (mean ± sd). The stages took "
        f"{report['stage_seconds'] / 60:.0f} min in all (timings.json; wall-clock on a shared "
        "machine is noisy).", "",
        "## Findings", ""]
    lines += [f"- {v['line']}" for v in verdicts.values()]
    lines += ["", "Rows whose fine-tuned models beat their task's baseline (mean over seeds; "
              "among models at the baseline a comparison says little): "
              + "; ".join(f"{key.replace('_', ' ')} {above}/{total}"
                          for key, (above, total) in _above_baseline(scores).items()) + "."]
    lines += ["", "## Pre-training", "",
              "| row | what | steps | executed FLOPs | final valid loss |",
              "|---|---|---:|---:|---:|"]
    for row, r in pre.items():
        lines.append(f"| {row} | {r['what']} | {r['steps']} | {r['flops']:.3e} | "
                     f"{r['final_valid_loss']:.3f} |")
    lines += ["", "Extracted encoders (" + ", ".join(EXTRACTED) + ") cost no training of "
              "their own; they carry their T5's compute.", "",
              "## Encoders on tasks", "",
              f"classification ({report['tasks']['classification']}): "
              f"{MAIN_METRIC['classification']}; tagging ({report['tasks']['tagging']}): "
              f"{MAIN_METRIC['tagging']} (full fine-tuning / probe with the encoder frozen).",
              "", "| encoder | classification full | classification probe | tagging full | "
              "tagging probe |", "|---|---:|---:|---:|---:|"]
    for row in ENCODER_ROWS:
        lines.append(f"| {row} | " + " | ".join(
            _cell(scores, row, f"{task}_{mode}") for task in ENCODER_TASKS
            for mode in ("full", "probe")) + " |")
    lines += _baseline_line(scores, "mlm", ("classification_full", "tagging_full"))
    lines += ["", "## Seq2seq models on the task", "",
              f"{SEQ2SEQ_TASK} ({report['tasks'][SEQ2SEQ_TASK]}): {MAIN_METRIC[SEQ2SEQ_TASK]}, "
              "exact match (from generated text, greedy).",
              "", "| T5 | chrF | exact match |", "|---|---:|---:|"]
    for row in (*SEQ2SEQ_ROWS, EQUAL_COMPUTE_ROW):
        entry = scores.get(row, {}).get(f"{SEQ2SEQ_TASK}_full")
        exact = Scores(tuple(entry["metrics"]["exact_match"])).describe() if entry else "-"
        lines.append(f"| {row} | {_cell(scores, row, f'{SEQ2SEQ_TASK}_full')} | {exact} |")
    lines += _baseline_line(scores, "t5_scratch", (f"{SEQ2SEQ_TASK}_full",))
    lines += ["", f"{EQUAL_COMPUTE_ROW}: the from-scratch T5 at the checkpoint where it had "
              "spent the compute of the warm-started T5 (unfrozen) in all.", "",
              "## Compute", "",
              "| pair | encoder FLOPs | T5 FLOPs | total | saving |", "|---|---:|---:|---:|---:|",
              f"| MLM + T5 from scratch | {compute['encoder_flops']:.3e} | "
              f"{compute['scratch_t5_flops']:.3e} | {compute['pair_from_scratch']:.3e} | - |"]
    for row, w in compute["warm"].items():
        lines.append(f"| MLM + {row} (all steps) | {compute['encoder_flops']:.3e} | "
                     f"{w['flops']:.3e} | {w['pair']:.3e} | "
                     f"{w['pair_saving_at_equal_steps']:.1%} |")
    lines += ["", f"Measured saving: the FLOPs at which each warm-started T5 first reaches the "
              f"from-scratch T5's final validation loss ({compute['target_valid_loss']:.3f}), "
              "interpolated on its validation curve, and the pair's cost at that point:", ""]
    for row, w in compute["warm"].items():
        if w["flops_to_target"] is None:
            lines.append(f"- {row}: never reaches it")
        else:
            lines.append(f"- {row}: {w['flops_to_target']:.3e} FLOPs, pair saving "
                         f"{w['pair_saving_to_target']:.1%}")
    lines += ["", "![validation loss against FLOPs](loss_vs_flops.png)", "",
              "![task scores](task_scores.png)", ""]
    return "\n".join(lines)


def _schedule(schedule: dict) -> str:
    length = f"{schedule['epochs']:g} epoch(s)" if schedule["epochs"] else \
        f"{schedule['steps']} steps"
    return f"{length} at lr {schedule['lr']:g} (probe {schedule['probe_lr']:g})"


def _above_baseline(scores: dict) -> dict[str, tuple[int, int]]:
    """Per task and mode: how many rows beat the baseline on the main metric."""
    counts: dict[str, list[int]] = {}
    for row_scores in scores.values():
        for key, entry in row_scores.items():
            metric = MAIN_METRIC[key.rsplit("_", 1)[0]]
            mean = sum(entry["metrics"][metric]) / len(entry["metrics"][metric])
            count = counts.setdefault(key, [0, 0])
            count[0] += mean > entry["baseline"]["metrics"][metric]
            count[1] += 1
    return {key: (above, total) for key, (above, total) in sorted(counts.items())}


def _baseline_line(scores: dict, row: str, keys: tuple[str, ...]) -> list[str]:
    parts = []
    for key in keys:
        entry = scores.get(row, {}).get(key)
        if entry:
            metric = MAIN_METRIC[key.rsplit("_", 1)[0]]
            parts.append(f"{key.rsplit('_', 1)[0]}: {entry['baseline']['name']} "
                         f"{entry['baseline']['metrics'][metric]:.3f}")
    return ["", "Baselines: " + "; ".join(parts)] if parts else []


def _plot_curves(path: Path, pre: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7.5, 4.5))
    for row in SEQ2SEQ_ROWS:
        curve = pre[row]["valid_curve"]
        axes.plot([c[1] for c in curve], [c[2] for c in curve],
                  "s-" if row.startswith("t5_warm") else "o--", label=row)
    axes.set_xlabel("executed training FLOPs (T5 stage)")
    axes.set_ylabel("validation loss (span corruption)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _plot_scores(path: Path, scores: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(f"{task}_{mode}", ENCODER_ROWS) for task in ENCODER_TASKS
              for mode in ("full", "probe")]
    panels.append((f"{SEQ2SEQ_TASK}_full", (*SEQ2SEQ_ROWS, EQUAL_COMPUTE_ROW)))
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.5))
    for ax, (key, rows) in zip(axes, panels):
        found = [(row, _main(scores, row, key)) for row in rows]
        found = [(row, s) for row, s in found if s is not None]
        ax.bar(range(len(found)), [s.mean for _, s in found],
               yerr=[s.sd for _, s in found], capsize=3)
        ax.set_xticks(range(len(found)), [row for row, _ in found], rotation=60, ha="right",
                      fontsize=7)
        ax.set_title(f"{key} ({MAIN_METRIC[key.rsplit('_', 1)[0]]})", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
