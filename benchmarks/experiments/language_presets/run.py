"""What each vocabulary-trimming language preset keeps of a Unigram tokenizer (the bundle's
tokenizer.json): pieces, the share of the vocabulary, the int8 embedding it leaves, and the
coverage on held-out text (benchmarks/texts/held_out.txt, one sentence a language: the share
of the untrimmed pieces of that sentence that survive).

    python -m benchmarks.experiments.language_presets.run TOKENIZER_JSON [--presets de,fr en ru ja ...]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from xlmr_serverless.export import trim
from xlmr_serverless.export.languages import scripts_for

HELD_OUT = Path(__file__).resolve().parents[2] / "texts" / "held_out.txt"
# the held-out file's sentences, in order
LANGS = ("de", "fr", "es", "ru", "el", "ar", "ja", "zh", "ko", "en")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tokenizer")
    ap.add_argument("--presets", nargs="+", default=["en", "de,fr,es", "ru", "ar", "zh", "ja",
                                                     "ko", "de,fr,ru,ja"])
    ap.add_argument("--hidden", type=int, default=768)
    a = ap.parse_args(argv)
    data = json.loads(Path(a.tokenizer).read_text(encoding="utf-8"))
    lines = [ln for ln in HELD_OUT.read_text(encoding="utf-8").splitlines() if ln]
    sentences = dict(zip(LANGS, lines))
    total = len(data["model"]["vocab"])
    print(f"{total:,} pieces untrimmed; held-out: {HELD_OUT.name}\n\n| preset | scripts | pieces "
          "| share | int8 embedding | coverage, own languages | coverage, all 10 |\n"
          "|---|---|---:|---:|---:|---:|---:|")
    for preset in a.presets:
        codes = tuple(preset.split(","))
        kept = trim.choose(data, [], 0, scripts_for(codes))
        own = [sentences[c] for c in codes if c in sentences]
        print(f"| {preset} | {', '.join(sorted(scripts_for(codes)))} | {len(kept.kept):,} | "
              f"{len(kept.kept) / total:.0%} | {len(kept.kept) * a.hidden / 1e6:.0f} MB | "
              f"{trim.coverage(data, kept, own):.3f} | {trim.coverage(data, kept, lines):.3f} |")


if __name__ == "__main__":
    main()
