"""What tokenizing a request costs before the model runs: for inputs under the 1 MB body
limit built to be expensive (short words, one long word, NFKC expansions such as U+FDFA's
18 characters, CJK, emoji), the characters the normalizer makes, the tokens, the wall time
and the growth of peak RSS, each input in its own process. The figures behind the default
of max_input_chars (docs/limits.md). Not a test: it prints and records.

    python -m benchmarks.tokenizer_cost TOKENIZER_JSON [--bytes 900000] [--output DIR]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from benchmarks.harness import machine, record

# name -> (one unit, bytes of UTF-8 it takes): the unit repeated fills the body
INPUTS = {"short-words": "a ", "one-long-word": "a", "ascii-text": "Berlin is a city. ",
          "cjk": "東京", "emoji": "😍", "control-chars": "\u0001", "spaces": " ",
          "nfkc-ligature": "\ufb03", "nfkc-squared": "\u3300", "nfkc-18x": "\ufdfa",
          "mixed": "Berlin 東京 ﷺ ა😍 "}

CHILD = """
import json, sys, time
from pathlib import Path
from tokenizers import Tokenizer
def status(field):
    return int(Path("/proc/self/status").read_text().split(field + ":")[1].split()[0]) / 1024
tok = Tokenizer.from_file(sys.argv[1])
text = sys.argv[2] * int(sys.argv[3])
Path("/proc/self/clear_refs").write_text("5")
before = status("VmRSS")
t0 = time.perf_counter()
chars = len(tok.normalizer.normalize_str(text)) if tok.normalizer else len(text)
t1 = time.perf_counter()
tokens = len(tok.encode(text).ids)
t2 = time.perf_counter()
print(json.dumps({"chars": len(text), "normalized_chars": chars, "tokens": tokens,
                  "normalize_s": round(t1 - t0, 3), "encode_s": round(t2 - t1, 3),
                  "peak_rss_growth_mb": round(status("VmHWM") - before, 1)}))
"""


def measure(tokenizer: str, unit: str, body_bytes: int) -> dict[str, Any]:
    repeat = body_bytes // len(unit.encode())
    out = subprocess.run([sys.executable, "-c", CHILD, tokenizer, unit, str(repeat)],
                         capture_output=True, text=True, check=True,
                         env={"TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin"})
    return {"bytes": repeat * len(unit.encode()), **json.loads(out.stdout)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("tokenizer")
    p.add_argument("--bytes", type=int, default=900_000)
    p.add_argument("--output", default="")
    a = p.parse_args()
    rows = {}
    for name, unit in INPUTS.items():
        rows[name] = measure(a.tokenizer, unit, a.bytes)
        chars = rows[name]["normalized_chars"]  # 0 where the normalizer drops every character
        rows[name]["bytes_of_rss_per_normalized_char"] = \
            round(rows[name]["peak_rss_growth_mb"] * 1e6 / chars) if chars else None
        print(name, json.dumps(rows[name]), flush=True)
    result = {"machine": machine(), "tokenizer": a.tokenizer, "inputs": rows}
    record(a.output, "tokenizer-cost.json", result)


if __name__ == "__main__":
    main()
