"""``seqpt generate`` as a user runs it, on a tiny trained T5 run: an output it could not write
is refused before any work, a failed write leaves nothing behind, sources longer than the
model reads are cut with a note, and a length penalty that ranks nothing or a compressed input
is refused."""

import gzip

import pytest

from megatron_seqpt import cli
from tests.recipe_runs import trained

SOURCES = ["the quick brown fox", "jumps over the lazy dog"]


@pytest.fixture(scope="module")
def t5_run(recipe_root):
    return trained("t5", recipe_root)


@pytest.fixture
def sources(tmp_path):
    path = tmp_path / "sources.txt"
    path.write_text("\n".join(SOURCES) + "\n", encoding="utf-8")
    return path


def generate(run, sources, *args: str) -> int:
    return cli.main(["generate", "--run", str(run), "--input", str(sources),
                     "--max-new-tokens", "3", *args])


def test_an_output_that_cannot_be_a_file_is_refused_before_the_run_is_read(sources, tmp_path,
                                                                          capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    # The run does not exist either: the output is what is checked first.
    assert generate(tmp_path / "no_run", sources, "--output", str(taken)) == 2
    assert f"--output {taken} is a directory" in capsys.readouterr().err
    assert generate(tmp_path / "no_run", sources, "--output", str(sources / "out.txt")) == 2
    assert f"{sources} is a file, not a directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sources.txt", "taken"]


def test_output_is_written_whole_with_its_directory_and_no_temporary_left(
        t5_run, sources, tmp_path, single_process):
    output = tmp_path / "new" / "dir" / "out.txt"
    assert generate(t5_run, sources, "--output", str(output)) == 0
    assert len(output.read_text(encoding="utf-8").splitlines()) == len(SOURCES)
    assert [p.name for p in output.parent.iterdir()] == ["out.txt"]


def test_sources_longer_than_the_model_reads_are_cut_with_a_note(
        t5_run, sources, tmp_path, capsys, single_process):
    long = tmp_path / "long.txt"
    long.write_text("short one\n" + "word " * 500 + "\n", encoding="utf-8")
    assert generate(t5_run, long) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2  # the outputs alone on stdout
    assert "1 of 2 sources" in captured.err and "data.seq_length" in captured.err
    assert generate(t5_run, sources) == 0
    assert "cut" not in capsys.readouterr().err


@pytest.mark.parametrize("penalty", ["nan", "inf", "-inf"])
def test_a_length_penalty_that_is_not_a_number_is_refused(sources, tmp_path, penalty, capsys):
    assert generate(tmp_path / "no_run", sources, "--beam-size", "2",
                    f"--length-penalty={penalty}") == 2
    assert "--length-penalty" in capsys.readouterr().err


def test_a_step_without_a_checkpoint_is_named_as_the_flag_the_user_gave(t5_run, sources,
                                                                       capsys):
    assert generate(t5_run, sources, "--step", "999") == 2
    error = capsys.readouterr().err
    assert "no complete checkpoint at step 999 (--step)" in error and "step_0000006" in error


def test_a_compressed_input_is_refused_naming_how_to_decompress_it(tmp_path, capsys):
    sources = tmp_path / "sources.txt.gz"
    sources.write_bytes(gzip.compress("\n".join(SOURCES).encode()))
    assert generate(tmp_path / "no_run", sources) == 2
    assert f"{sources} is gzip-compressed; decompress it first" in capsys.readouterr().err
