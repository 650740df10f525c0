"""Config: YAML + overrides resolve as documented; each kind of mistake gets its clear error."""

import subprocess
import sys

import pytest
import yaml

from megatron_seqpt.config import ConfigError, RunConfig, dump, load_run_config


def write(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_without_file():
    config = load_run_config()
    assert config == RunConfig()


def test_yaml_then_overrides(tmp_path):
    path = write(tmp_path, """
model:
  kind: t5
  encoder: {num_layers: 4}
train:
  steps: 10
""")
    config = load_run_config(path, ["train.steps=50", "model.decoder.num_layers=1",
                                    "optim.lr=1", "optim.min_lr=1e-6",
                                    "data.corpus=[a.jsonl, b.txt]",
                                    "checkpoint.load=null"])
    assert config.model.kind == "t5"
    assert config.model.encoder.num_layers == 4          # from the file
    assert config.model.encoder.ffn_hidden_size == 512   # default kept beside it
    assert config.train.steps == 50                      # override wins over the file
    assert config.model.decoder.num_layers == 1          # section absent from the file
    assert config.optim.lr == 1.0 and isinstance(config.optim.lr, float)
    assert config.optim.min_lr == 1e-6  # YAML 1.1 reads 1e-6 as a string
    assert config.data.corpus == ["a.jsonl", "b.txt"]
    assert config.checkpoint.load is None


def test_resolved_dump_loads_back_identically(tmp_path):
    config = load_run_config(None, ["model.kind=t5", "freeze.encoder.frozen=true",
                                    "freeze.encoder.unfreeze_at_fraction=0.5",
                                    "data.prefixes={en: /data/en}"])
    dump(config, tmp_path / "config.yaml")
    again = load_run_config(tmp_path / "config.yaml")
    assert again == config
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["model"]["kind"] == "t5"


def error_of(path=None, overrides=()):
    with pytest.raises(ConfigError) as info:
        load_run_config(path, overrides)
    return str(info.value)


def test_unknown_key_in_file_names_file_key_and_suggestion(tmp_path):
    path = write(tmp_path, "model:\n  hiden_size: 64\n")
    message = error_of(path)
    assert str(path) in message
    assert "model.hiden_size" in message
    assert "did you mean 'model.hidden_size'" in message


def test_a_fine_tuning_config_given_to_a_pretraining_command_says_which_command_takes_it():
    message = error_of("examples/configs/tasks/topic_tiny.yaml")
    assert "key 'task'" in message and "seqpt finetune" in message, message


def test_unknown_override_suggests_full_key():
    message = error_of(None, ["trian.steps=5"])
    assert "'trian'" in message and "'train'" in message
    message = error_of(None, ["optim.learning_rate=0.1"])
    assert "optim.learning_rate" in message and "valid keys under optim:" in message
    assert "lr" in message


def test_wrong_type_names_key_value_and_expected_type(tmp_path):
    message = error_of(None, ["train.steps=abc"])
    assert "train.steps" in message and "'abc'" in message and "an integer" in message
    assert "command-line override 'train.steps=abc'" in message
    message = error_of(write(tmp_path, "train:\n  steps: 1.5\n"))
    assert "train.steps" in message and "1.5" in message
    message = error_of(None, ["model.kind=bert"])
    assert "model.kind" in message and "'encoder'" in message and "'t5'" in message
    message = error_of(None, ["parallel.sequence_parallel=maybe"])
    assert "true or false" in message


def test_structure_mistakes():
    assert "expected a mapping" in error_of(None, ["model=5"])
    assert "is a value, not a section" in error_of(None, ["train.steps.x=1"])
    assert "section.key=value" in error_of(None, ["train.steps"])


def test_cross_field_checks_name_both_values():
    message = error_of(None, ["train.global_batch_size=10", "train.micro_batch_size=4"])
    assert "train.global_batch_size" in message and "10" in message and "4" in message
    message = error_of(None, ["model.hidden_size=100", "model.encoder.num_attention_heads=3"])
    assert "model.encoder.num_attention_heads" in message
    message = error_of(None, ["freeze.encoder.unfreeze_at_step=10"])
    assert "freeze.encoder.frozen" in message
    message = error_of(None, ["data.seq_length=1024"])
    assert "model.max_position_embeddings" in message


def test_settings_that_would_fail_or_do_nothing_later_are_refused():
    message = error_of(None, ["model.kind=t5", "data.decoder_seq_length=600"])
    assert "data.decoder_seq_length 600" in message and "max_position_embeddings 512" in message
    message = error_of(None, ["model.kind=t5", "parallel.tensor_model_parallel_size=2",
                              "parallel.sequence_parallel=true", "data.seq_length=128",
                              "data.decoder_seq_length=61"])
    assert "data.decoder_seq_length 61" in message and "tensor_model_parallel_size 2" in message
    message = error_of(None, ["train.steps=100", "freeze.encoder.frozen=true",
                              "freeze.encoder.unfreeze_at_step=100"])
    assert "freeze.encoder.unfreeze_at_step 100" in message and "train.steps 100" in message


@pytest.mark.parametrize("override", [
    "optim.lr=inf", "optim.weight_decay=-1", "optim.weight_decay=nan", "optim.adam_beta1=1.5",
    "optim.adam_beta2=-0.1", "optim.adam_eps=-1", "optim.clip_grad=nan", "optim.clip_grad=-1",
    "model.init_method_std=-1", "model.init_method_std=nan", "freeze.encoder.lr_mult=nan",
    "freeze.encoder.lr_mult=inf", "model.encoder_mlm_weight=nan"])
def test_optimizer_and_initialisation_settings_torch_would_refuse_or_break_on(override):
    """torch refused some with a traceback at start (betas, weight decay, the init std); NaN
    passed every 'at least' check and made a run that diverged or never clipped."""
    message = error_of(None, [override])
    assert f"command-line override '{override}'" in message, message


def test_file_problems(tmp_path):
    assert "config file not found" in error_of(tmp_path / "missing.yaml")
    assert "not valid YAML" in error_of(write(tmp_path, "model: [unclosed\n"))
    assert "top level must be a mapping" in error_of(write(tmp_path, "- a\n- b\n"))


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    path = write(tmp_path, "model:\n  kind: t5\ntrain:\n  steps: 5\nmodel:\n  hidden_size: 64\n")
    message = error_of(path)
    assert str(path) in message and "key 'model' is given twice" in message
    assert "line 5" in message and "line 1" in message
    nested = write(tmp_path, "optim:\n  lr: 1.0e-3\n  lr: 2.0e-3\n")
    assert "key 'lr' is given twice" in error_of(nested)


def test_an_empty_config_file_is_refused(tmp_path):
    for text in ("", "# only a comment\n"):
        message = error_of(write(tmp_path, text))
        assert "holds no settings" in message and "leave out --config" in message


def test_out_of_range_overrides_are_blamed_on_the_command_line(tmp_path):
    path = write(tmp_path, "train:\n  steps: 5\n")
    message = error_of(path, ["optim.lr=-1"])
    assert message.startswith("command-line override 'optim.lr=-1'") and "positive" in message
    message = error_of(path, ["train.micro_batch_size=7"])
    assert "command-line override 'train.micro_batch_size=7'" in message


def test_cli_refuses_a_bad_config_without_traceback(tmp_path):
    path = write(tmp_path, "train:\n  stesp: 10\n")
    result = subprocess.run([sys.executable, "-m", "megatron_seqpt.cli", "config",
                             "--config", str(path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "train.stesp" in result.stderr and "did you mean 'train.steps'" in result.stderr
    good = subprocess.run([sys.executable, "-m", "megatron_seqpt.cli", "config",
                           "model.kind=t5"], capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    assert yaml.safe_load(good.stdout)["model"]["kind"] == "t5"


def test_cli_help_lists_commands():
    result = subprocess.run([sys.executable, "-m", "megatron_seqpt.cli", "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0
    assert "config" in result.stdout and "env" in result.stdout


def test_seqpt_config_checks_what_a_run_would_refuse_before_any_work(capsys, monkeypatch):
    from megatron_seqpt import cli

    for var in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(var, raising=False)
    assert cli.main(["config", "parallel.tensor_model_parallel_size=4"]) == 2
    err = capsys.readouterr().err
    assert "world size 1" in err and "--world-size" in err
    assert cli.main(["config", "--world-size", "8", "parallel.tensor_model_parallel_size=4"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["parallel"]["tensor_model_parallel_size"] == 4
    assert cli.main(["config", "model.kind=t5", "data.decoder_seq_length=10"]) == 2
    assert "data.decoder_seq_length 10 is too short" in capsys.readouterr().err
    # A job of 0 or -3 processes was checked as this launch's (1), or passed.
    for world in ("0", "-3"):
        assert cli.main(["config", "--world-size", world]) == 2
        assert f"--world-size must be at least 1, got {world}" in capsys.readouterr().err
