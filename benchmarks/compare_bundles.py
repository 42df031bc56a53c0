"""Bundles side by side (a trimmed vocabulary against the untrimmed one, say): size on disk,
the Lambda handler's cold start (process start to first 200, peak RSS) and the pipeline's p50
on a short input, each bundle in its own processes, rounds alternating; the ISA named.

    python -m benchmarks.compare_bundles BUNDLE [BUNDLE ...] [--rounds 3] [--text "..."]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.harness import cold_start
from xlmr_serverless.runtime.cpu import isa

LATENCY = """
import json, sys, time
import numpy as np
from xlmr_serverless.runtime import load
pipe = load(sys.argv[1])
text = sys.argv[2]
pipe(text)
ms = []
for _ in range(30):
    t = time.perf_counter(); pipe(text); ms.append((time.perf_counter() - t) * 1000)
print(json.dumps({"p50_ms": float(np.median(ms)), "tokens": len(pipe.tokenizer.encode([text])[0].ids)}))
"""


def disk_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 1e6


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--text", default="Der Vertrag wurde gestern in <mask> unterzeichnet.")
    a = ap.parse_args(argv)
    folders = [Path(b) for b in a.bundles]
    cold: dict[Path, list[dict]] = {f: [] for f in folders}
    lat: dict[Path, list[dict]] = {f: [] for f in folders}
    for _ in range(a.rounds):
        for f in folders:
            cold[f].append(cold_start("lambda_handler", f, "", "", None))
            out = subprocess.run([sys.executable, "-c", LATENCY, str(f), a.text],
                                 capture_output=True, text=True, check=True).stdout
            lat[f].append(json.loads(out.strip().splitlines()[-1]))
    print(f"ISA {isa()}; {a.rounds} alternating rounds; text {a.text!r}\n")
    print("| bundle | pieces | on disk | handler cold start (median) | peak RSS | pipeline p50 "
          "| held-out coverage |\n|---|---:|---:|---:|---:|---:|---:|")
    for f in folders:
        m = json.loads((f / "manifest.json").read_text())
        voc = m.get("vocabulary") or {}
        pieces = voc.get("kept") or len(json.loads((f / "tokenizer.json").read_text())
                                        ["model"]["vocab"])
        coverage = "1 (untrimmed)" if not voc else "n/a (no held-out text)" \
            if voc.get("held_out_coverage") is None else f"{voc['held_out_coverage']:.3f}"
        print(f"| {f.name} | {pieces:,} | {disk_mb(f):.1f} MB | "
              f"{np.median([c['seconds'] for c in cold[f]]):.2f} s | "
              f"{np.median([c['peak_rss_mb'] for c in cold[f]]):.0f} MB | "
              f"{np.median([x['p50_ms'] for x in lat[f]]):.1f} ms ({lat[f][0]['tokens']} tokens) "
              f"| {coverage} |")
        phases = cold[f][-1].get("phases")
        if phases:
            listed = ", ".join(f"{k} {v:.0f}" for k, v in phases.items())
            print(f"|  phases (last round, ms) | {listed} |||||")


if __name__ == "__main__":
    main()
