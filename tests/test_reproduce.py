"""The reproduction grid: compute-to-target on synthetic curves, verdicts from seed spreads,
and a micro-scale ``seqpt reproduce`` end to end (every row in the report) that continues after
an interruption without redoing finished stages."""

import json
import shutil

import pytest

from megatron_seqpt import cli
from megatron_seqpt.data.samples import check_t5_decoder_length
from megatron_seqpt.recipes.curves import flops_to_reach, pair_saving
from megatron_seqpt.recipes.findings import (
    Scores,
    claim_better,
    claim_matches,
    difference,
    measurable,
)
from megatron_seqpt.recipes.reproduce_grid import (
    ENCODER_ROWS,
    EQUAL_COMPUTE_ROW,
    PRETRAIN_ROWS,
    SCALES,
    SEQ2SEQ_ROWS,
    pretrain_configs,
)
from megatron_seqpt.recipes.reproduce_report import seq2seq_claim


def test_flops_to_reach_interpolates_the_crossing():
    curve = [(0.0, 8.0), (10.0, 6.0), (20.0, 4.0), (30.0, 3.0)]
    assert flops_to_reach(curve, 5.0) == pytest.approx(15.0)
    assert flops_to_reach(curve, 3.5) == pytest.approx(25.0)
    assert flops_to_reach(curve, 4.0) == pytest.approx(20.0)  # reached at an evaluation
    assert flops_to_reach(curve, 9.0) == 0.0  # below the target from the start
    assert flops_to_reach(curve, 2.0) is None  # never reached
    # A curve that goes back up after crossing: the first crossing counts.
    assert flops_to_reach([(0, 5.0), (10, 3.0), (20, 6.0), (30, 2.0)], 4.0) == \
        pytest.approx(5.0)


def test_pair_saving():
    assert pair_saving(encoder=100.0, seq2seq=50.0, baseline_seq2seq=100.0) == pytest.approx(0.25)
    assert pair_saving(100.0, 100.0, 100.0) == 0.0


def test_verdicts_weigh_differences_against_the_seed_spread():
    a, b = Scores((0.80, 0.82, 0.81)), Scores((0.70, 0.71, 0.69))
    assert difference(a, b).significant and claim_better([difference(a, b)]) == "holds"
    noisy = Scores((0.60, 0.90, 0.75))
    assert not difference(noisy, b).significant
    assert claim_better([difference(noisy, b)]) == "within noise"
    assert claim_better([difference(b, a)]) == "does not hold"
    assert claim_matches(difference(noisy, a)) == "holds"
    assert claim_matches(difference(b, a)) == "does not hold"


def test_models_at_the_baseline_make_no_verdict():
    """Two T5s that both generate worse than copying the source "match" each other; that
    says nothing about the recipe."""
    warm, scratch = Scores((1.2, 1.1, 1.3)), Scores((0.9, 1.0, 0.8))
    verdict = claim_matches(difference(warm, scratch))
    assert verdict == "holds"
    assert measurable(verdict, [warm, scratch], baseline=85.2) == "not measurable"
    assert measurable(verdict, [warm, scratch], baseline=1.15) == "holds"


def _seq2seq_scores(warm_chrf, scratch_chrf, warm_loss, scratch_loss, copy_chrf=85.2):
    def entry(chrf, loss):
        return {"seq2seq_full": {"metrics": {"chrf": list(chrf)}, "valid_loss": list(loss),
                                 "baseline": {"name": "copy the source",
                                              "metrics": {"chrf": copy_chrf}}}}
    return {"t5_warm_unfreeze": entry(warm_chrf, warm_loss),
            "t5_scratch": entry(scratch_chrf, scratch_loss)}


def test_warm_start_claim_falls_back_to_the_task_loss_when_no_t5_generates_the_task():
    """Both T5s below copying the source: chrF says nothing, their validation losses do."""
    low_chrf = ((1.1, 1.3, 1.2), (0.9, 1.0, 0.8))
    ahead = seq2seq_claim(_seq2seq_scores(*low_chrf, (4.40, 4.41, 4.42), (4.60, 4.61, 4.59)),
                           "")
    assert ahead["verdict"] == "holds" and ahead["judged_on"] == "valid_loss"
    assert ahead["delta"] == pytest.approx(0.19)
    behind = seq2seq_claim(_seq2seq_scores(*low_chrf, (4.80, 4.81, 4.79), (4.60, 4.61, 4.59)),
                            "")
    assert behind["verdict"] == "does not hold" and "validation loss" in behind["line"]
    # Where a T5 beats the baseline, chrF decides and the losses are not consulted.
    scored = _seq2seq_scores((60.0, 61.0, 59.0), (60.5, 59.5, 60.0), (4.80, 4.81, 4.79),
                             (4.60, 4.61, 4.59), copy_chrf=50.0)
    assert seq2seq_claim(scored, "")["judged_on"] == "chrf"
    assert seq2seq_claim(scored, "")["verdict"] == "holds"


@pytest.mark.slow
def test_micro_reproduction_runs_every_row_and_continues(single_process, tmp_path, capsys):
    output = tmp_path / "repro"
    command = ["reproduce", "--output-dir", str(output), "--scale", "micro", "--seeds", "1"]
    assert cli.main(command) == 0
    report = json.loads((output / "report.json").read_text())
    assert set(report["pretraining"]) == set(PRETRAIN_ROWS)
    assert set(report["encoder_tasks"]) == set(ENCODER_ROWS)
    for scored in report["encoder_tasks"].values():
        assert set(scored) == {"classification_full", "classification_probe", "tagging_full",
                               "tagging_probe"}
    assert set(report["seq2seq_tasks"]) == {*SEQ2SEQ_ROWS, EQUAL_COMPUTE_ROW}
    assert set(report["verdicts"]) == {"extracted_encoder_underperforms",
                                       "extracted_encoder_underperforms_frozen",
                                       "warm_start_matches_scratch", "compute_saving"}
    for row in (*SEQ2SEQ_ROWS, EQUAL_COMPUTE_ROW):
        assert len(report["seq2seq_tasks"][row]["seq2seq_full"]["valid_loss"]) == 1, row
    for row, scored in report["pretraining"].items():
        assert scored["flops"] > 0 and scored["steps"] > 0, row
    markdown = (output / "report.md").read_text()
    for row in (*PRETRAIN_ROWS, *ENCODER_ROWS, *SEQ2SEQ_ROWS, EQUAL_COMPUTE_ROW):
        assert f"| {row} |" in markdown, row
    for picture in ("loss_vs_flops.png", "task_scores.png"):
        assert (output / picture).stat().st_size > 1000

    # As if interrupted after the pre-training and the first fine-tunings: the rest reruns,
    # nothing finished is redone.
    finished = output / "finetune" / "mlm" / "classification_full" / "seed1" / "eval.json"
    before = finished.stat().st_mtime_ns
    removed = output / "finetune" / "t5_scratch"
    shutil.rmtree(removed)
    (output / "report.json").unlink()
    capsys.readouterr()
    assert cli.main(command) == 0
    captured = capsys.readouterr()
    assert "pretrain/mlm: complete, skipped" in captured.out + captured.err
    assert finished.stat().st_mtime_ns == before
    assert (removed / "seq2seq_full" / "seed1" / "eval.json").is_file()
    assert (output / "report.json").is_file()


@pytest.mark.parametrize("scale", sorted(SCALES))
def test_every_scale_makes_t5_rows_whose_samples_fit_the_decoder(scale, tmp_path):
    """Checked at data build time otherwise: a scale meant for a cluster would fail there."""
    configs = pretrain_configs(tmp_path, SCALES[scale], [])
    for name, config in configs.items():
        if config.model.kind == "t5":
            check_t5_decoder_length(config.data)


def _reproduce_command(output: str, stages: list[str]) -> int:
    """(Runs in a rank process.) ``seqpt reproduce`` as torchrun or srun starts it on each rank;
    the micro scale's micro-batch halved for two data-parallel ranks."""
    return cli.main(["reproduce", "--output-dir", output, "--scale", "micro", "--seeds", "1",
                     "train.micro_batch_size=4", "--only", *stages])


def test_stages_run_one_after_another_in_a_launch_of_two_ranks(ranks, tmp_path):
    """A pre-training stage, then a fine-tuning stage (training, then scoring) in one launch:
    the second process group of the launch failed to connect (every stage after the first),
    and both ranks wrote timings.json through the same temporary ('cannot use
    timings.tmp: No such file or directory' on one of them)."""
    output = tmp_path / "repro"
    stages = ["pretrain/t5_scratch", "finetune/t5_scratch/seq2seq_full/seed1"]
    assert ranks.run(_reproduce_command, 2, str(output), stages) == [0, 0]
    assert set(json.loads((output / "timings.json").read_text())) == set(stages)
    assert json.loads((output / stages[1] / "eval.json").read_text())["task"] == "seq2seq"
    assert not [p for p in output.iterdir() if ".tmp" in p.name]


def test_only_given_twice_runs_both_lists(tmp_path, capsys):
    """``--only A --only B`` names two stages, as ``--only A B`` does: an unknown first one is
    refused before anything runs, not dropped for the second."""
    output = tmp_path / "repro"
    command = ["reproduce", "--output-dir", str(output), "--scale", "micro",
               "--only", "pretrain/nonexistent", "--only", "pretrain/mlm"]
    assert cli.main(command) == 2
    assert "unknown stage 'pretrain/nonexistent'" in capsys.readouterr().err
    assert not (output / "pretrain" / "mlm").exists()


def test_continuing_a_reproduction_with_other_settings_is_refused(single_process, tmp_path,
                                                                 capsys):
    """A stage whose run is complete is skipped: continued with another scale, task or
    override, the report would mix runs of both settings. The settings that make the grid are
    kept with it and compared (more seeds add runs and are allowed)."""
    output = tmp_path / "repro"
    command = ["reproduce", "--output-dir", str(output), "--only", "pretrain/mlm"]
    assert cli.main([*command, "--scale", "micro", "--seeds", "1"]) == 0
    task_file = "examples/configs/tasks/topic_tiny.yaml"
    for changed, named in ((["--scale", "tiny"], "--scale micro (now tiny)"),
                           (["--classification-task", task_file], "--classification-task topic"),
                           (["train.global_batch_size=4"], "overrides (none)")):
        capsys.readouterr()
        assert cli.main([*command, "--scale", "micro", "--seeds", "1", *changed]) == 2, changed
        error = capsys.readouterr().err
        assert named in error and "new --output-dir" in error, error
    assert cli.main([*command, "--scale", "micro", "--seeds", "2"]) == 0
    assert "pretrain/mlm: complete, skipped" in "".join(capsys.readouterr())


@pytest.mark.parametrize("command", [["reproduce", "--scale", "micro"], ["demo"]])
def test_an_output_dir_that_is_a_file_is_refused_naming_it(command, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("a file\n")
    assert cli.main([command[0], "--output-dir", str(taken), *command[1:]]) == 2
    assert f"--output-dir {taken} is a file" in capsys.readouterr().err
