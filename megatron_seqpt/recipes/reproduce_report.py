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
from megatron_seqpt.recipes.report import less_or_more
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
                entry = {"seeds": len(results), "metrics": metrics,
                         "baseline": results[0]["baseline"]}
                if task == SEQ2SEQ_TASK:
                    entry["valid_loss"] = [valid_curve(r)[-1][2] for r in runs
                                           if (r / "eval.json").is_file()]
                scores.setdefault(row, {})[f"{task}_{mode}"] = entry
    return scores


def _main(scores: dict, row: str, key: str) -> Optional[Scores]:
    task = key.rsplit("_", 1)[0]
    entry = scores.get(row, {}).get(key)
    return Scores(tuple(entry["metrics"][MAIN_METRIC[task]])) if entry else None


def _valid_loss(scores: dict, row: str) -> Optional[Scores]:
    """The seq2seq task's validation loss at the end of fine-tuning, over seeds."""
    entry = scores.get(row, {}).get(f"{SEQ2SEQ_TASK}_full")
    return Scores(tuple(entry["valid_loss"])) if entry and entry.get("valid_loss") else None


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


def encoder_claim(scores: dict, mode: str, caveat: str) -> dict:
    """Claim 1 on fine-tuned (``full``) or frozen (``probe``) encoders: the MLM encoder beats
    every extracted one on tagging, and by more than on classification."""
    mlm_tag = _main(scores, "mlm", f"tagging_{mode}")
    mlm_cls = _main(scores, "mlm", f"classification_{mode}")
    extracted = [row for row in ENCODER_ROWS if row != "mlm"]
    tagging = [findings.difference(mlm_tag, _main(scores, row, f"tagging_{mode}"))
               for row in extracted if mlm_tag and _main(scores, row, f"tagging_{mode}")]
    classification = [
        findings.difference(mlm_cls, _main(scores, row, f"classification_{mode}"))
        for row in extracted if mlm_cls and _main(scores, row, f"classification_{mode}")]
    verdict = findings.claim_better(tagging)
    if mlm_tag:
        verdict = findings.measurable(verdict, [mlm_tag], _baseline(scores, "mlm",
                                                                   f"tagging_{mode}"))
    particularly = bool(tagging and classification) and (
        sum(d.delta for d in tagging) / len(tagging)
        > sum(d.delta for d in classification) / len(classification))
    how = "fine-tuned" if mode == "full" else "frozen (probes)"
    return {"verdict": verdict, "tagging_gaps": [d.delta for d in tagging],
            "classification_gaps": [d.delta for d in classification],
            "larger_on_tagging": particularly,
            "line": f"Encoders {how}: MLM encoder better than every extracted encoder on "
                    f"tagging ({MAIN_METRIC['tagging']}): {verdict}{caveat}; the gap is "
                    f"{'larger' if particularly else 'not larger'} on tagging than on "
                    f"classification" + _unmeasured(verdict, scores, "mlm", f"tagging_{mode}")}


def seq2seq_claim(scores: dict, caveat: str) -> Optional[dict]:
    """Claim 2: the warm-started T5 (unfrozen partway) matches T5 from scratch on the seq2seq
    task; judged on the task's validation loss where no T5 generates better than copying
    the source (at small scales none learns to generate the task, but their losses differ)."""
    warm, scratch = (_main(scores, row, f"{SEQ2SEQ_TASK}_full")
                     for row in ("t5_warm_unfreeze", "t5_scratch"))
    if not (warm and scratch):
        return None
    d = findings.difference(warm, scratch)
    verdict = findings.measurable(findings.claim_matches(d), [warm, scratch],
                                  _baseline(scores, "t5_scratch", f"{SEQ2SEQ_TASK}_full"))
    line = (f"warm-started T5 (unfrozen at {UNFREEZE_FRACTION:.0%}) matches T5 from scratch "
            f"on {SEQ2SEQ_TASK} ({MAIN_METRIC[SEQ2SEQ_TASK]} {warm.describe(2)} vs "
            f"{scratch.describe(2)})")
    result = {"delta": d.delta, "noise": d.noise, "judged_on": MAIN_METRIC[SEQ2SEQ_TASK]}
    warm_loss, scratch_loss = _valid_loss(scores, "t5_warm_unfreeze"), _valid_loss(
        scores, "t5_scratch")
    if verdict == "not measurable" and warm_loss and scratch_loss:
        # Lower is better: scratch - warm is positive where the warm start is ahead.
        d = findings.difference(scratch_loss, warm_loss)
        verdict = findings.claim_matches(d)
        result.update(delta=d.delta, noise=d.noise, judged_on="valid_loss")
        line += (_unmeasured("not measurable", scores, "t5_scratch", f"{SEQ2SEQ_TASK}_full")
                 + f"; on the task's validation loss ({warm_loss.describe(3)} vs "
                   f"{scratch_loss.describe(3)}): {verdict}{caveat}")
    else:
        line += f": {verdict}{caveat}" + _unmeasured(verdict, scores, "t5_scratch",
                                                     f"{SEQ2SEQ_TASK}_full")
    return {"verdict": verdict, **result, "line": line}


def _verdicts(scores: dict, compute: dict, seeds: int) -> dict:
    caveat = "" if seeds > 1 else " (one seed: no spread to judge noise by)"
    # 1. Extracted encoders under-perform the MLM encoder, particularly on sequence labelling.
    verdicts = {"extracted_encoder_underperforms": encoder_claim(scores, "full", caveat),
                "extracted_encoder_underperforms_frozen": encoder_claim(scores, "probe",
                                                                         caveat)}
    # 2. The warm-started T5 (unfrozen partway) matches T5 from scratch on the seq2seq task.
    seq2seq = seq2seq_claim(scores, caveat)
    if seq2seq:
        verdicts["warm_start_matches_scratch"] = seq2seq
    # 3. Both models for about a quarter less compute.
    measured = compute["warm"]["t5_warm_unfreeze"]["pair_saving_to_target"]
    if measured is None:
        verdict, line = "does not hold", "the warm-started T5 (unfrozen at " \
            f"{UNFREEZE_FRACTION:.0%}) never reached the from-scratch T5's final validation loss"
    else:
        verdict = "holds" if measured > 0 else "does not hold"
        line = (f"the pair with the warm-started T5 (unfrozen at {UNFREEZE_FRACTION:.0%}) cost "
                f"{less_or_more(measured)} compute to reach the from-scratch T5's final "
                f"validation loss (paper: about {PAPER_SAVING:.0%} less)")
    others = [f"{row} {less_or_more(w['pair_saving_to_target'])}"
              if w["pair_saving_to_target"] is not None else f"{row} never"
              for row, w in compute["warm"].items() if row != "t5_warm_unfreeze"]
    verdicts["compute_saving"] = {"verdict": verdict, "measured": measured,
                                  "line": f"{line}: {verdict} (the other warm starts: "
                                          f"{', '.join(others)})"}
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
        + "".join(f", {kind} {_schedule(s[kind], kind != SEQ2SEQ_TASK)}"
                  for kind in ("tagging", SEQ2SEQ_TASK) if s.get(kind))
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
              "exact match (from generated text, greedy, on the test split); validation loss "
              "(teacher-forced cross-entropy per target piece at the end of fine-tuning).",
              "", "| T5 | chrF | exact match | valid loss |", "|---|---:|---:|---:|"]
    for row in (*SEQ2SEQ_ROWS, EQUAL_COMPUTE_ROW):
        entry = scores.get(row, {}).get(f"{SEQ2SEQ_TASK}_full")
        exact = Scores(tuple(entry["metrics"]["exact_match"])).describe() if entry else "-"
        loss = _valid_loss(scores, row)
        lines.append(f"| {row} | {_cell(scores, row, f'{SEQ2SEQ_TASK}_full')} | {exact} | "
                     f"{loss.describe() if loss else '-'} |")
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


def _schedule(schedule: dict, probed: bool = True) -> str:
    length = f"{schedule['epochs']:g} epoch(s)" if schedule["epochs"] else \
        f"{schedule['steps']} steps"
    return f"{length} at lr {schedule['lr']:g}" + (f" (probe {schedule['probe_lr']:g})"
                                                   if probed else "")


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
    # Framed on the losses after the first evaluation: a warm start's new decoder begins far
    # above the rest (18 at the default scale) and would flatten everything that follows.
    later = [c[2] for row in SEQ2SEQ_ROWS for c in pre[row]["valid_curve"][1:]]
    if later:
        margin = 0.05 * (max(later) - min(later) or 1.0)
        axes.set_ylim(min(later) - margin, max(later) + margin)
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
