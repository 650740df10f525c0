"""Tokenizer training on the default corpus: reserved ids, language balance, determinism,
clear errors, nothing half-written, pipes as input, interrupts."""

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import psutil
import pytest
import sentencepiece as spm

from megatron_seqpt.errors import UserError
from megatron_seqpt.text.corpus import ReadOptions, read_records
from megatron_seqpt.text.kept_pipes import KeptPipes
from megatron_seqpt.text.sampling import temperature_weights
from megatron_seqpt.text.sentences import (
    SentenceSplitter,
    learn_splitters,
    survey_languages,
)
from megatron_seqpt.tokenizer import special_tokens as st
from megatron_seqpt.tokenizer.training import (
    plan_sample,
    sample_sentences,
    train_tokenizer,
)
from tests.raw_corpus import CORPUS, VOCAB_SIZE, records, tokenizer_model, write_jsonl
from tests.named_pipes import fed_once, stalled_pipe_and_interrupt

ROOT = Path(__file__).resolve().parents[1]


def test_special_tokens_and_sentinels_sit_at_their_reserved_ids():
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_model()))
    assert sp.vocab_size() == VOCAB_SIZE
    assert (sp.pad_id(), sp.eos_id(), sp.bos_id(), sp.unk_id()) == (
        st.PAD_ID, st.EOS_ID, st.BOS_ID, st.UNK_ID)
    expected = [st.PAD, st.EOS, st.BOS, st.UNK] + st.reserved_symbols(
        st.DEFAULT_NUM_SENTINELS)
    assert [sp.id_to_piece(i) for i in range(len(expected))] == expected
    ids = [sp.piece_to_id(piece) for piece in expected]
    assert ids == list(range(len(expected))) and len(set(ids)) == len(ids)
    assert sp.piece_to_id(st.sentinel(99)) == 4 + 3 + 99
    # Special symbols are control symbols: a literal "<mask>" in text is text.
    assert all(sp.is_control(i) for i in ids[4:])
    assert sp.piece_to_id(st.MASK) not in sp.encode(f"see {st.MASK} and {st.sentinel(0)}")
    # No ordinary piece duplicates a special one.
    pieces = [sp.id_to_piece(i) for i in range(sp.vocab_size())]
    assert len(set(pieces)) == len(pieces)


def test_same_inputs_and_seed_give_the_same_model_bytes(tmp_path):
    again = train_tokenizer([CORPUS], VOCAB_SIZE, tmp_path / "again", progress=False)
    assert again.read_bytes() == tokenizer_model().read_bytes()
    assert again.with_suffix(".vocab").is_file()
    other = train_tokenizer([CORPUS], VOCAB_SIZE, tmp_path / "other", seed=7, progress=False)
    assert other.read_bytes() != again.read_bytes()


def skewed_corpus(tmp_path):
    """English eight times over, the eleven other languages once: a big and small languages."""
    rows = [r for r in records() if r["lang"] == "en"] * 8 + \
        [r for r in records() if r["lang"] != "en"]
    return write_jsonl(tmp_path / "skewed.jsonl", rows)


@pytest.mark.parametrize("alpha", [0.3, 1.0])
def test_sample_follows_the_temperature(tmp_path, alpha):
    path = skewed_corpus(tmp_path)
    recs = list(read_records([path], ReadOptions()))
    surveys = survey_languages((r.lang, r.texts[0]) for r in recs)
    params = learn_splitters({lang: s.sample for lang, s in surveys.items()})
    splitters = {lang: SentenceSplitter(lang, p) for lang, p in params.items()}
    sentences = Counter()
    for r in recs:
        sentences[r.lang] += len(splitters[r.lang].split(r.texts[0]))
    mean_chars = {lang: s.chars / sentences[lang] for lang, s in surveys.items()}
    shares = plan_sample({lang: s.documents for lang, s in surveys.items()},
                         {lang: s.chars for lang, s in surveys.items()}, mean_chars, alpha,
                         max_sentences=10**7)
    expected = temperature_weights(sentences, alpha)
    drawn = Counter(lang for lang, _ in sample_sentences(recs, shares, splitters, seed=1))
    total = sum(drawn.values())
    assert abs(total - sum(sentences.values())) < 0.1 * total
    for lang, weight in expected.items():
        assert drawn[lang] / total == pytest.approx(weight, abs=0.03), lang
    natural = sentences["en"] / sum(sentences.values())
    if alpha == 1.0:
        assert drawn == sentences                       # the natural mixture, as it is
    else:
        assert drawn["en"] / total < natural / 2        # the big language gives way


def test_sample_is_capped_at_max_sentences(tmp_path):
    surveys = {"en": 5000, "de": 1000}
    shares = plan_sample(surveys, {"en": 500_000, "de": 100_000}, {"en": 100.0, "de": 100.0},
                         0.5, max_sentences=600)
    expected = sum(share.rate * share.sentences for share in shares.values())
    assert expected == pytest.approx(600)
    assert shares["de"].rate > shares["en"].rate


def test_too_large_vocab_names_the_largest_that_works_and_leaves_nothing(tmp_path):
    with pytest.raises(UserError, match=r"vocab size 20000 is too large .* --vocab-size \d+"):
        train_tokenizer([CORPUS], 20000, tmp_path / "big", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_too_small_vocab_is_explained(tmp_path):
    with pytest.raises(UserError, match="363 ids are reserved"):
        train_tokenizer([CORPUS], 300, tmp_path / "small", progress=False)
    with pytest.raises(UserError, match=r"vocab size 1000 cannot hold the \d+ characters"):
        train_tokenizer([CORPUS], 1000, tmp_path / "small", progress=False)


def test_no_documents_is_an_error(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", ["not json", '{"text": ""}'])
    with pytest.raises(UserError, match="no documents to train on .*invalid_json 1"):
        train_tokenizer([bad], VOCAB_SIZE, tmp_path / "tok", on_error="skip", progress=False)


def test_a_named_pipe_as_input_gives_the_model_of_its_file(tmp_path):
    """Training reads its input twice (languages' sizes, then the sample); a pipe is read once
    and kept for the second pass: it gave sentencepiece no sentences."""
    fifo = tmp_path / "udhr.jsonl"
    with fed_once(fifo, CORPUS.read_bytes()):
        model = train_tokenizer([fifo], VOCAB_SIZE, tmp_path / "tok", progress=False)
    assert model.read_bytes() == tokenizer_model().read_bytes()


def _train_tokenizer_tool(tmp_path: Path, args: list[str], script: str | None = None,
                          env: dict | None = None, stdin: bytes | None = None,
                          timeout: float = 300) -> subprocess.CompletedProcess:
    """tools/train_tokenizer.py run with ``args`` (under ``script``, a wrapper that runs it,
    when given), temporary files in tmp_path/"tmp", Ctrl-C not ignored."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    tool = [str(ROOT / "tools/train_tokenizer.py"), *args]
    return subprocess.run(
        [sys.executable, *(["-c", script] if script else []), *tool], input=stdin,
        capture_output=True, timeout=timeout, start_new_session=True,
        env={**os.environ, "TMPDIR": str(tmp_path / "tmp"), **(env or {})},
        # Started in the background, a test run passes Ctrl-C on as ignored (see test_preprocess).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_stdin_as_input_gives_the_model_of_its_file_and_leaves_no_copy(tmp_path):
    done = _train_tokenizer_tool(
        tmp_path, ["--input", "/dev/stdin", "--vocab-size", str(VOCAB_SIZE), "--output-prefix",
                   str(tmp_path / "tok")], stdin=CORPUS.read_bytes())
    assert done.returncode == 0, done.stderr.decode()
    assert (tmp_path / "tok.model").read_bytes() == tokenizer_model().read_bytes()
    assert list((tmp_path / "tmp").iterdir()) == []


def _assert_interrupted_leaving_nothing(done: subprocess.CompletedProcess, tmp_path: Path,
                                        arisen: str) -> None:
    """Exit 130 with one line, no model in tmp_path/"out", nothing in TMPDIR; ``arisen``, a
    line the run printed, shows the situation under test did arise."""
    stderr = done.stderr.decode()
    assert arisen in stderr, stderr
    assert done.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr, stderr
    assert not (tmp_path / "out").exists()
    assert list((tmp_path / "tmp").iterdir()) == []


# Run as a script: the signal comes when SIGNAL_PATH is opened the second time, in the second
# pass (sampling sentences) after the records of the inputs before it, while sentencepiece's
# trainer reads the sample, called back from C++.
_SIGNAL_IN_THE_SAMPLING_PASS = """
import os, runpy, signal, sys

def hook(event, args):
    if event == "open" and args[0] == os.environ["SIGNAL_PATH"]:
        hook.opened = getattr(hook, "opened", 0) + 1
        if hook.opened == 2:
            print("signal in the sampling pass", file=sys.stderr, flush=True)
            signal.raise_signal(int(os.environ["SIGNAL"]))

sys.addaudithook(hook)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("signum,first_input", [(signal.SIGINT, "file"),
                                                (signal.SIGTERM, "stdin")],
                         ids=["Ctrl-C-file", "SIGTERM-stdin"])
def test_an_interrupt_in_the_sampling_pass_stops_training_and_leaves_nothing(
        tmp_path, signum, first_input):
    """Ctrl-C while sentencepiece's trainer reads the sample (past its first sentence) came out
    as its RuntimeError (a traceback, exit 1); with a pipe kept for the second pass, SIGTERM
    must not leave the copy behind."""
    stdin = None
    if first_input == "file":
        first = str(write_jsonl(tmp_path / "first.jsonl", records()[:50]))
    else:
        first, stdin = "/dev/stdin", CORPUS.read_bytes()
    done = _train_tokenizer_tool(
        tmp_path, ["--input", first, str(CORPUS), "--vocab-size", str(VOCAB_SIZE),
                   "--output-prefix", str(tmp_path / "out" / "tok")],
        _SIGNAL_IN_THE_SAMPLING_PASS, {"SIGNAL": str(int(signum)), "SIGNAL_PATH": str(CORPUS)},
        stdin)
    _assert_interrupted_leaving_nothing(done, tmp_path, "signal in the sampling pass")


def test_an_interrupt_while_a_pipe_has_no_data_stops_its_copy_and_removes_it(
        tmp_path, monkeypatch):
    """A signal noted while the main thread is not blocked in a read (here taken by another
    thread) must not wait for the pipe's next data (``runtime/interrupts.py``)."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    fifo = tmp_path / "in.jsonl"
    with stalled_pipe_and_interrupt(fifo, CORPUS.read_bytes()[:100_000]) as stall_ended:
        with pytest.raises(KeyboardInterrupt):
            with KeptPipes([fifo], progress=False):
                pass
        assert not stall_ended.is_set()
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize("option,value,message", [
    ("sampling_alpha", -1.0, r"--sampling-alpha must be in \(0, 1\], got -1.0"),
    ("max_sentences", 0, "--max-sentences must be at least 1, got 0"),
    ("num_threads", 0, "--num-threads must be 1 to 1024, got 0"),
    ("character_coverage", 2.0, "--character-coverage must be 0.98 to 1, got 2.0"),
    ("num_sentinels", -5, "--num-sentinels must be at least 0, got -5"),
    ("seed", -1, "--seed must be 0 to 4294967295, got -1"),
])
def test_a_bad_option_is_refused_in_one_line_before_the_corpus_is_read(
        tmp_path, option, value, message):
    """They came out of sentencepiece or numpy as tracebacks, some after the first pass over
    the corpus (minutes on a large one), and a negative sentinel count was taken as none."""
    empty = write_jsonl(tmp_path / "empty.jsonl", [])  # read first: "no documents to train on"
    with pytest.raises(UserError, match=message):
        train_tokenizer([empty], VOCAB_SIZE, tmp_path / "tok", progress=False, **{option: value})
    assert list(tmp_path.iterdir()) == [empty]


# Run as a script: 0.5 s after the piped input's copy is removed (the sample has been read,
# sentencepiece trains), AFTER_THE_SAMPLE: Ctrl-C ("ctrl-c"), a SIGKILL of this process's
# children ("kill"), or SIGTERM to its process group ("sigterm-group"); it prints the children.
_ONCE_SENTENCEPIECE_TRAINS = """
import os, runpy, signal, sys, threading
import psutil

def act():
    action = os.environ.get("AFTER_THE_SAMPLE")
    children = psutil.Process().children()
    print("children", *[child.pid for child in children], file=sys.stderr, flush=True)
    if action == "kill":
        for child in children:
            child.kill()
    elif action == "sigterm-group":  # a scheduler ending the job: every process gets it
        os.killpg(os.getpgid(0), signal.SIGTERM)
    else:
        os.kill(os.getpid(), signal.SIGINT)

def hook(event, args):
    if event == "shutil.rmtree":
        print("the sample is read", file=sys.stderr, flush=True)
        threading.Timer(0.5, act).start()

sys.addaudithook(hook)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _a_long_training(tmp_path: Path, after_the_sample: str) -> subprocess.CompletedProcess:
    """The tool on a corpus whose training takes minutes (random words make many distinct
    pieces; one thread), piped in, with ``after_the_sample`` done once it is read."""
    rng = random.Random(0)

    def sentence() -> str:
        return " ".join("".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 9)))
                        for _ in range(8)) + "."

    corpus = "".join(json.dumps({"text": " ".join(sentence() for _ in range(10)),
                                 "lang": "en"}) + "\n" for _ in range(10_000))
    return _train_tokenizer_tool(
        tmp_path, ["--input", "/dev/stdin", "--vocab-size", str(VOCAB_SIZE), "--num-threads",
                   "1", "--output-prefix", str(tmp_path / "out" / "tok")],
        _ONCE_SENTENCEPIECE_TRAINS, {"AFTER_THE_SAMPLE": after_the_sample},
        stdin=corpus.encode(), timeout=60)


def test_ctrl_c_while_sentencepiece_trains_stops_the_run_at_once(tmp_path):
    """sentencepiece trains in C++ without returning to Python, which therefore ran the Ctrl-C
    handler only once the training had finished: the run must end well within the test's
    time."""
    _assert_interrupted_leaving_nothing(_a_long_training(tmp_path, "ctrl-c"), tmp_path,
                                        "the sample is read")


def test_sigterm_to_the_whole_job_while_sentencepiece_trains_leaves_no_process(tmp_path):
    """A scheduler's SIGTERM reaches every process of the job; the run (its piped input held)
    ends as interrupted and its training process with it."""
    done = _a_long_training(tmp_path, "sigterm-group")
    _assert_interrupted_leaving_nothing(done, tmp_path, "the sample is read")
    children = [int(pid) for line in done.stderr.decode().splitlines()
                if line.startswith("children") for pid in line.split()[1:]]
    assert children  # the training process
    for pid in children:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


def test_a_killed_training_process_fails_the_run_in_one_line(tmp_path):
    """The out-of-memory killer may take sentencepiece's process (it holds the sample)."""
    done = _a_long_training(tmp_path, "kill")
    stderr = done.stderr.decode()
    assert "the sample is read" in stderr, stderr
    assert done.returncode == 2, stderr
    assert "sentencepiece's training process ended (exit code -9); a SIGKILL is often the " \
        "out-of-memory killer" in stderr, stderr
    assert "Traceback" not in stderr, stderr
    assert not (tmp_path / "out").exists()
    assert list((tmp_path / "tmp").iterdir()) == []
