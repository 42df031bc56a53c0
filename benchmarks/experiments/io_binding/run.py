"""Does IO binding pay on this host? One bundle file, one session, the forward pass timed with
and without onnxruntime's IO binding in alternating rounds (same session, same thread pool, so
the two paths never compete), printed as p50 ms per shape and the ratio.

    python -m benchmarks.experiments.io_binding.run BUNDLE [--provider cpu|cuda] [--precision P]
           [--shapes 1x16,1x128,8x128] [--rounds 30]
"""
from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from benchmarks.inputs import token_rows
from xlmr_serverless.runtime import load


def time_paths(bundle: Any, ids: np.ndarray, rounds: int) -> dict[str, list[float]]:
    """Milliseconds per forward pass, bound and plain, alternating within every round."""
    mask = np.ones_like(ids)
    ms: dict[str, list[float]] = {"plain": [], "bound": []}
    for _ in range(3):  # warm both paths
        for bound in (False, True):
            bundle.io_binding = bound
            bundle.run(ids, mask)
    for r in range(rounds):
        for bound in ((False, True) if r % 2 == 0 else (True, False)):
            bundle.io_binding = bound
            t = time.perf_counter()
            bundle.run(ids, mask)
            ms["bound" if bound else "plain"].append((time.perf_counter() - t) * 1000)
    return ms


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--provider", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--precision")
    ap.add_argument("--shapes", default="1x16,1x128,8x128", help="BATCHxSEQ, comma-separated")
    ap.add_argument("--rounds", type=int, default=30)
    a = ap.parse_args(argv)
    pipe = load(a.bundle, provider=a.provider, precision=a.precision)
    b = pipe.bundle
    cls, sep = b.specials.get("cls", 0), b.specials.get("sep", 2)
    print(f"{a.bundle}: provider {b.provider}, precision {b.precision}")
    print(f"{'shape':>8} {'plain p50 ms':>13} {'bound p50 ms':>13} {'plain/bound':>12}")
    for shape in a.shapes.split(","):
        batch, seq = (int(x) for x in shape.lower().split("x"))
        ids = token_rows(b.tokenizer, min(seq, b.manifest.max_length), batch, cls, sep,
                         b.specials.get("mask") if b.manifest.task == "fill-mask" else None)
        ms = time_paths(b, ids, a.rounds)
        plain, bound = float(np.median(ms["plain"])), float(np.median(ms["bound"]))
        print(f"{shape:>8} {plain:13.2f} {bound:13.2f} {plain / bound:12.3f}")


if __name__ == "__main__":
    main()
