"""A JSONL corpus of real, unrepeated text in six languages from Debian's fortune files.

    apt-get install fortunes fortunes-de fortunes-es fortunes-it fortunes-ru fortunes-br
    python benchmarks/fortunes_corpus.py /tmp/fortunes.jsonl
    python benchmarks/preprocess_throughput.py --corpus /tmp/fortunes.jsonl --workers 1

One record per fortune (``text``, ``lang`` from the package), 10 M characters: short documents
with many line breaks and about one candidate sentence end per 90 characters, unlike the
default corpus, whose repeated UDHR text has few distinct ones. The files are not in the
repository (each package has its own licence terms); this builds the corpus where they are
installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PACKAGES = {"fortunes": "en", "fortunes-de": "de", "fortunes-es": "es", "fortunes-it": "it",
            "fortunes-ru": "ru", "fortunes-br": "pt"}
ROOT = "/usr/share/games/fortunes"


def fortune_files(package: str) -> list[Path]:
    """The package's fortune text files (not the .dat indexes, .u8 copies or links)."""
    listed = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    if listed.returncode:
        raise SystemExit(f"package {package} is not installed: apt-get install "
                         + " ".join(PACKAGES))
    return [Path(name) for name in listed.stdout.split()
            if name.startswith(ROOT) and Path(name).is_file() and not Path(name).is_symlink()
            and not name.endswith((".dat", ".u8"))]


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    records = size = 0
    with open(sys.argv[1], "w", encoding="utf-8") as out:
        for package, lang in PACKAGES.items():
            for path in fortune_files(package):
                text = path.read_bytes().decode("utf-8", errors="replace")
                for entry in text.split("\n%\n"):
                    if entry.strip():
                        out.write(json.dumps({"text": entry.strip(), "lang": lang},
                                             ensure_ascii=False) + "\n")
                        records += 1
                        size += len(entry)
    print(f"{records} records, {size / 1e6:.1f} M characters in {sys.argv[1]}")


if __name__ == "__main__":
    main()
