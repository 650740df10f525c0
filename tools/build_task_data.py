"""Rebuild the built-in downstream task data (megatron_seqpt/resources/tasks/) from two PyPI
wheels. Not needed to use the project: the result is committed. To rebuild:

    pip download --no-deps chatterbot-corpus==1.3.3 turkish-treebanks==1.0.0 -d wheels
    python tools/build_task_data.py \\
        --chatterbot wheels/chatterbot_corpus-1.3.3-py2.py3-none-any.whl \\
        --treebank wheels/turkish_treebanks-1.0.0-py3-none-any.whl

Either argument may also be the unpacked package (the directory holding ``chatterbot_corpus/``
or ``data/web.conllu``). The output is the same bytes on every run (fixed seeds).

Tasks (see megatron_seqpt/resources/tasks/SOURCE.md):
- ``topic``: classification of a chatterbot-corpus utterance and its reply into a shared topic
  label set, several languages (jsonl ``text``, ``text_pair``, ``label``, ``lang``).
- ``punct``: punctuation restoration as tagging, one tag per lower-cased bare word (two-column
  CoNLL, ``# lang = xx`` before each sentence).
- ``restore``: punctuation and casing restoration as seq2seq (jsonl ``source``, ``target``,
  ``lang``).
- ``pos_tr``: Turkish part-of-speech tagging, the Google Turkish treebanks with inflectional
  groups merged back into words (CoNLL-U), in the package's own train/dev/test split.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import unicodedata
import zipfile
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml

OUTPUT = Path(__file__).resolve().parents[1] / "megatron_seqpt/resources/tasks"
SPLITS = ("train", "valid", "test")
SHARES = {"train": 0.8, "valid": 0.1, "test": 0.1}
SEED = 1234
T = TypeVar("T")

# chatterbot-corpus folder -> language code, for the project's pre-training languages it has.
CHATTERBOT_LANGUAGES = {
    "english": "en", "german": "de", "spanish": "es", "french": "fr", "hindi": "hi",
    "italian": "it", "japanese": "ja", "marathi": "mr", "portuguese": "pt", "tamil": "ta",
    "telugu": "te",
}
# File stems that are not the shared English label name -> the label. The other stems are
# labels as they are; labels and languages with too little data are then dropped.
TOPIC_ALIASES = {
    "IA": "ai", "perfilbot": "botprofile", "origen": "botprofile", "emociones": "emotion",
    "dinero": "money", "psicologia": "psychology", "coversations": "conversations",
    "history_brasil": "history",
}
MIN_LABEL_EXAMPLES = 20       # a label needs this many examples in all ...
MIN_LABEL_LANGUAGES = 2       # ... in at least this many languages, each with ...
MIN_LABEL_PER_LANGUAGE = 5    # ... this many examples.
MIN_LANGUAGE_EXAMPLES = 40    # a language needs this many examples of kept labels

PUNCT_LANGUAGES = ("en", "de", "es", "fr", "hi", "it", "pt")
RESTORE_LANGUAGES = PUNCT_LANGUAGES + ("ja",)
MAX_TARGET_CHARS = 160
MIN_WORDS = 3
MIN_JA_CHARS = 4

END_MARKS = ".?!।"
TAG_MARKS = ",.?!।"
DOUBLE_QUOTES = "\"“”«»„"
QUOTES = DOUBLE_QUOTES + "'‘’"
NEVER_INSIDE = ",?!।" + DOUBLE_QUOTES   # a word may hold apostrophes, hyphens, decimal points
OPENING = "¿¡" + QUOTES
# The one punctuation mark behind a word -> its tag; the first mark found in this order wins.
TAGS = (("?", "QUESTION"), ("!", "EXCLAMATION"), (".", "PERIOD"), ("।", "PERIOD"),
        (",", "COMMA"))
ALLOWED_PUNCT = set(TAG_MARKS + OPENING + "-")
JA_ALLOWED_PUNCT = set("。、？！，．?!,.・「」『』〜～-" + QUOTES)
JA_END_MARKS = "。？！?!．."
JA_REMOVED = re.compile(r"(?<!\d)[.,．，](?!\d)|[。、？！?!「」『』" + QUOTES + "]")
SCRIPTS = {"hi": re.compile(r"[\u0900-\u097F]"),
           "ja": re.compile(r"[\u3040-\u30FF\u4E00-\u9FFF]")}

POS_BUDGET_BYTES = 1_150_000  # the three pos_tr files together
TREEBANK_FILES = ("data/web.conllu", "data/wiki.conllu")


class Package:
    """A wheel or its unpacked directory, read alike so that either can be passed."""

    def __init__(self, path: Path):
        self.path = path
        if path.is_dir():
            self._names = sorted(p.relative_to(path).as_posix()
                                 for p in path.rglob("*") if p.is_file())
        else:
            with zipfile.ZipFile(path) as wheel:
                self._names = sorted(n for n in wheel.namelist() if not n.endswith("/"))

    def names(self) -> list[str]:
        return self._names

    def read_text(self, name: str) -> str:
        if self.path.is_dir():
            return (self.path / name).read_text(encoding="utf-8")
        with zipfile.ZipFile(self.path) as wheel:
            return wheel.read(name).decode("utf-8")


# ---------------------------------------------------------------------------------------------
# chatterbot-corpus

@dataclass(frozen=True)
class Conversation:
    lang: str
    topic: str                # the file's stem
    turns: tuple[str, ...]    # cleaned utterances, up to the first unusable entry


def clean_turns(entries: list) -> tuple[str, ...]:
    """Whitespace-normalised utterances up to the first entry that is not a non-empty string,
    so that a reply is never paired with the wrong utterance."""
    turns = []
    for entry in entries:
        text = " ".join(entry.split()) if isinstance(entry, str) else ""
        if not text:
            break
        turns.append(text)
    return tuple(turns)


def load_conversations(package: Package, junk: Counter) -> list[Conversation]:
    """Every conversation of the chosen languages. YAML's BaseLoader keeps every scalar a
    string, so that replies such as ``Yes``, ``No`` or ``1963`` stay text."""
    pattern = re.compile(r"chatterbot_corpus/data/([^/]+)/([^/]+)\.yml$")
    conversations = []
    for name in package.names():
        match = pattern.search(name)
        if not match or match.group(1) not in CHATTERBOT_LANGUAGES:
            continue
        lang = CHATTERBOT_LANGUAGES[match.group(1)]
        data = yaml.load(package.read_text(name), Loader=yaml.BaseLoader)
        for entries in data.get("conversations", []):
            if not isinstance(entries, list):
                junk["conversation is not a list"] += 1
                continue
            turns = clean_turns(entries)
            junk["entries dropped (not a string, empty, or after such)"] += \
                len(entries) - len(turns)
            if turns:
                conversations.append(Conversation(lang, match.group(2), turns))
    return conversations


def normalised(text: str) -> str:
    """The grouping key of a text: case-insensitive, whitespace-normalised."""
    return " ".join(text.casefold().split())


def in_script(lang: str, text: str) -> bool:
    """Whether a text of a language with its own script uses it (drops untranslated lines)."""
    return lang not in SCRIPTS or bool(SCRIPTS[lang].search(text))


def unique(items: Iterable[T]) -> list[T]:
    """The items without repeats, in first-seen order."""
    return list(dict.fromkeys(items))


def topic_examples(conversations: Sequence[Conversation]) -> list[dict]:
    """(first utterance, reply) pairs with their shared topic label, for the labels and
    languages that have enough data; a text found under two labels (``hello`` is both
    greetings and conversations) is ambiguous and left out."""
    examples = unique(
        (c.lang, c.turns[0], c.turns[1], TOPIC_ALIASES.get(c.topic, c.topic))
        for c in conversations if len(c.turns) >= 2 and in_script(c.lang, c.turns[0]))
    per_cell = Counter((lang, label) for lang, _, _, label in examples)
    totals = Counter(label for _, label in per_cell.elements())
    labels = {label for label, total in totals.items()
              if total >= MIN_LABEL_EXAMPLES
              and sum(n >= MIN_LABEL_PER_LANGUAGE
                      for (_, lab), n in per_cell.items() if lab == label) >= MIN_LABEL_LANGUAGES}
    kept = [e for e in examples if e[3] in labels]
    seen: dict[str, set[str]] = {}
    for _, text, _, label in kept:
        seen.setdefault(normalised(text), set()).add(label)
    kept = [e for e in kept if len(seen[normalised(e[1])]) == 1]
    languages = {lang for lang, n in Counter(e[0] for e in kept).items()
                 if n >= MIN_LANGUAGE_EXAMPLES}
    return [{"text": text, "text_pair": pair, "label": label, "lang": lang}
            for lang, text, pair, label in kept if lang in languages]


def split_groups(items: Sequence[T], key: Callable[[T], Hashable],
                 cell: Callable[[T], Hashable], seed: int) -> dict[str, list[T]]:
    """Items in train/valid/test, about 80/10/10 of the items of each cell (a language, or a
    language and label). Items with the same key form one group and share a split, so that no
    text is in two splits; a group goes by the cell of its first item. Within a cell the largest
    groups come first (ties in seeded random order) and each goes to the split furthest below
    its share, so train gets every cell's first group and tiny cells go to train whole. Each
    split comes out in a seeded random order."""
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    cells: dict[Hashable, list[list[T]]] = {}
    for members in groups.values():
        cells.setdefault(cell(members[0]), []).append(members)
    rng = random.Random(seed)
    splits: dict[str, list[T]] = {split: [] for split in SPLITS}
    for cell_key in sorted(cells, key=repr):
        cell_groups = cells[cell_key]
        rng.shuffle(cell_groups)
        cell_groups.sort(key=len, reverse=True)
        total = sum(map(len, cell_groups))
        filled = dict.fromkeys(SPLITS, 0)
        for members in cell_groups:
            split = max(SPLITS, key=lambda s: SHARES[s] * total - filled[s])
            filled[split] += len(members)
            splits[split].extend(members)
    for split in SPLITS:
        rng.shuffle(splits[split])
    return splits


# ---------------------------------------------------------------------------------------------
# punctuation: well-formed utterances, tags and sources

def allowed_char(char: str, lang: str) -> bool:
    """Letters, marks, digits, spaces and the punctuation the task can express; anything else
    (markup, URLs, emoticons, emoji, brackets, colons) makes an utterance unusable."""
    if char == " " or unicodedata.category(char)[0] in "LMN":
        return True
    return char in (JA_ALLOWED_PUNCT if lang == "ja" else ALLOWED_PUNCT)


def split_token(token: str) -> tuple[str, str]:
    """(the word without its opening and closing punctuation, the closing punctuation)."""
    core = token.lstrip(OPENING)
    end = len(core.rstrip(TAG_MARKS + QUOTES))
    return core[:end], core[end:]


def tag_of(closing: str) -> str:
    for mark, tag in TAGS:
        if mark in closing:
            return tag
    return "O"


def tagged_words(text: str) -> list[tuple[str, str]] | None:
    """The lower-cased bare words of an utterance with the punctuation after each, or None
    when a word holds punctuation inside (``a,b``, ``U.S.``, ``Soleil”started``) or is only a
    dash. A mark standing alone (French ``vas-tu ?``) belongs to the word before it."""
    words: list[tuple[str, str]] = []
    for token in text.split():
        word, closing = split_token(token)
        if not word:
            marks = closing.strip(QUOTES)
            if marks and not words:
                return None
            if marks:
                words[-1] = (words[-1][0], words[-1][1] + marks)
            continue
        if (not any(c.isalnum() for c in word)
                or any(c in word for c in NEVER_INSIDE)
                or re.search(r"\D\.|\.\D", word)):
            return None
        words.append((word.lower(), closing))
    return [(word, tag_of(closing)) for word, closing in words]


def well_formed(lang: str, text: str) -> bool:
    """An utterance worth restoring: starts with a letter (after ¿ ¡ or a quote), a capital
    where the script has case (so that the casing targets agree), ends with a sentence mark,
    has at least 3 words (4 characters in Japanese), no ellipsis, only characters the task can
    express, and at most 160 characters."""
    body = text.lstrip(OPENING)
    if (not body or not body[0].isalpha() or body[0].islower()
            or len(text) > MAX_TARGET_CHARS or ".." in text or "…" in text
            or not in_script(lang, text) or not all(allowed_char(c, lang) for c in text)):
        return False
    if lang == "ja":
        return text[-1] in JA_END_MARKS and len(JA_REMOVED.sub("", text)) >= MIN_JA_CHARS
    if text.rstrip(QUOTES)[-1:] not in END_MARKS:
        return False
    words = tagged_words(text)
    return words is not None and len(words) >= MIN_WORDS


def restore_source(lang: str, text: str) -> str:
    """A well-formed utterance as a recogniser would give it: lower-cased, no punctuation or
    quotes. In space-delimited languages these are the punct task's words (``3.5`` and
    ``l'homme`` stay whole); Japanese loses every mark except a decimal point."""
    if lang == "ja":
        return " ".join(JA_REMOVED.sub("", text).lower().split())
    return " ".join(word for word, _ in tagged_words(text))


def utterances(conversations: Sequence[Conversation]) -> list[tuple[str, str]]:
    """Distinct well-formed (language, utterance) pairs of the restore languages."""
    return unique((c.lang, turn) for c in conversations if c.lang in RESTORE_LANGUAGES
                  for turn in c.turns if well_formed(c.lang, turn))


# ---------------------------------------------------------------------------------------------
# Turkish treebank

@dataclass(frozen=True)
class Sentence:
    sent_id: str
    text: str
    rows: tuple[tuple[str, ...], ...]   # 10-column CoNLL-U rows


def read_conllu(text: str) -> list[Sentence]:
    sentences, comments, rows = [], {}, []
    for line in text.splitlines() + [""]:
        if not line:
            if rows:
                sentences.append(Sentence(comments["sent_id"], comments["text"], tuple(rows)))
            comments, rows = {}, []
        elif line.startswith("# "):
            key, _, value = line[2:].partition(" = ")
            comments[key] = value
        else:
            rows.append(tuple(line.split("\t")))
    return sentences


def merge_igs(sentence: Sentence) -> Sentence:
    """Surface words from inflectional groups: a row whose relation is ``ig`` (always written
    without a space after it) joins the next row. A word takes the form of its IGs joined, the
    UPOS and XPOS of its last IG, and that IG's SpaceAfter; the other columns are dropped."""
    words, pending = [], []
    for row in sentence.rows:
        pending.append(row)
        if row[7] == "ig":
            continue
        form = "".join(r[1] for r in pending)
        misc = "SpaceAfter=No" if "SpaceAfter=No" in row[9].split("|") else "_"
        words.append((str(len(words) + 1), form, "_", row[3], row[4], "_", "_", "_", "_", misc))
        pending = []
    if pending:
        raise ValueError(f"{sentence.sent_id}: sentence ends inside a word")
    return Sentence(sentence.sent_id, sentence.text, tuple(words))


def surface(rows: Iterable[tuple[str, ...]]) -> str:
    """The text that a sentence's words and their SpaceAfter imply."""
    return "".join(r[1] + ("" if "SpaceAfter=No" in r[9] else " ") for r in rows).rstrip(" ")


def conllu_block(sentence: Sentence) -> str:
    lines = [f"# sent_id = {sentence.sent_id}", f"# text = {sentence.text}"]
    lines += ["\t".join(row) for row in sentence.rows]
    return "\n".join(lines) + "\n\n"


def treebank_split(index: int) -> str:
    """The package's own split (turkish_treebanks/read.py): of every ten sentences of a file,
    the first eight are train, the ninth dev (here valid), the tenth test."""
    return "train" if index % 10 < 8 else ("valid" if index % 10 == 8 else "test")


def pos_splits(package: Package) -> tuple[dict[str, list[Sentence]], Counter]:
    """Merged sentences of each split whose words reproduce ``# text``, a seeded sample of
    each that fits its share of the byte budget; also the counts of what was read and left
    out."""
    counts = Counter({"read": 0, "words do not reproduce # text": 0})
    splits: dict[str, list[Sentence]] = {split: [] for split in SPLITS}
    for name in TREEBANK_FILES:
        for index, sentence in enumerate(read_conllu(package.read_text(name))):
            merged = merge_igs(sentence)
            counts["read"] += 1
            if surface(merged.rows) != merged.text:
                counts["words do not reproduce # text"] += 1
                continue
            splits[treebank_split(index)].append(merged)
    rng = random.Random(SEED)
    for split in SPLITS:
        rng.shuffle(splits[split])
        budget, size, kept = SHARES[split] * POS_BUDGET_BYTES, 0, []
        for sentence in splits[split]:
            size += len(conllu_block(sentence).encode("utf-8"))
            if size > budget:
                break
            kept.append(sentence)
        counts[f"{split} beyond the size budget"] = len(splits[split]) - len(kept)
        splits[split] = kept
    return splits, counts


def drop_unseen(splits: dict[str, list[T]], labels: Callable[[T], Iterable[str]]
                ) -> dict[str, int]:
    """Removes valid/test items with a label that train lacks; returns how many per split."""
    known = {label for item in splits["train"] for label in labels(item)}
    dropped = {}
    for split in ("valid", "test"):
        before = len(splits[split])
        splits[split] = [item for item in splits[split] if set(labels(item)) <= known]
        dropped[split] = before - len(splits[split])
    return dropped


# ---------------------------------------------------------------------------------------------
# output

def write(path: Path, blocks: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        out.writelines(blocks)


def jsonl(records: Iterable[dict]) -> Iterator[str]:
    return (json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def punct_block(lang: str, text: str) -> str:
    words = tagged_words(text)
    return f"# lang = {lang}\n" + "".join(f"{w}\t{t}\n" for w, t in words) + "\n"


def report(task: str, split: str, languages: Counter, labels: Counter) -> None:
    print(f"{task:8s} {split:5s} {sum(languages.values()):6d} examples  "
          f"languages {dict(sorted(languages.items()))}")
    if labels:
        print(f"{'':21s}labels {dict(labels.most_common())}")


def build_topic(conversations: Sequence[Conversation], out: Path) -> None:
    examples = topic_examples(conversations)
    splits = split_groups(examples, lambda e: normalised(e["text"]),
                          lambda e: (e["lang"], e["label"]), SEED)
    for split in SPLITS:
        write(out / "topic" / f"{split}.jsonl", jsonl(splits[split]))
        report("topic", split, Counter(e["lang"] for e in splits[split]),
               Counter(e["label"] for e in splits[split]))


def build_punct_restore(conversations: Sequence[Conversation], out: Path) -> None:
    """punct and restore share one split of one utterance pool (punct without Japanese)."""
    pool = utterances(conversations)
    splits = split_groups(pool, lambda u: restore_source(*u), lambda u: u[0], SEED)
    for split in SPLITS:
        items = splits[split]
        write(out / "restore" / f"{split}.jsonl",
              jsonl({"source": restore_source(lang, text), "target": text, "lang": lang}
                    for lang, text in items))
        report("restore", split, Counter(lang for lang, _ in items), Counter())
    for split in SPLITS:
        items = [(lang, text) for lang, text in splits[split] if lang in PUNCT_LANGUAGES]
        write(out / "punct" / f"{split}.conll", (punct_block(*item) for item in items))
        report("punct", split, Counter(lang for lang, _ in items),
               Counter(tag for _, text in items for _, tag in tagged_words(text)))


def build_pos(package: Package, out: Path) -> None:
    splits, counts = pos_splits(package)
    dropped = drop_unseen(splits, lambda s: (row[3] for row in s.rows))
    counts.update({f"{split} with a UPOS missing from train": n for split, n in dropped.items()})
    print(f"pos_tr: sentences {dict(counts)}")
    for split in SPLITS:
        write(out / "pos_tr" / f"{split}.conllu", map(conllu_block, splits[split]))
        report("pos_tr", split, Counter({"tr": len(splits[split])}),
               Counter(row[3] for s in splits[split] for row in s.rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chatterbot", type=Path, required=True,
                        help="chatterbot_corpus-1.3.3 wheel or its unpacked directory")
    parser.add_argument("--treebank", type=Path, required=True,
                        help="turkish_treebanks-1.0.0 wheel or its unpacked directory")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    junk: Counter = Counter()
    conversations = load_conversations(Package(args.chatterbot), junk)
    print(f"chatterbot: {len(conversations)} conversations; left out: {dict(junk)}")
    build_topic(conversations, args.output)
    build_punct_restore(conversations, args.output)
    build_pos(Package(args.treebank), args.output)


if __name__ == "__main__":
    main()
