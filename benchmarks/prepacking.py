"""What onnxruntime's weight prepacking costs and buys on a bundle file: session load time,
b1/s16 latency and peak RSS with it on (the default) and off
(`session.disable_prepacking`), each in its own process, alternating.

    python -m benchmarks.prepacking MODEL.onnx [--rounds 2]
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import numpy as np


def probe(path: str, disable: bool) -> str:
    import onnxruntime as ort

    t = time.perf_counter()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    if disable:
        opts.add_session_config_entry("session.disable_prepacking", "1")
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    load = time.perf_counter() - t
    # 16 tokens, one <mask> (XLM-R ids; any vocabulary of 250,002 pieces)
    ids = np.array([[0, *range(1000, 1007), 250001, *range(2000, 2006), 2]])
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    sess.run(None, feed)
    ms = []
    for _ in range(15):
        t = time.perf_counter()
        sess.run(None, feed)
        ms.append((time.perf_counter() - t) * 1000)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return (f"| {'off' if disable else 'on (default)'} | {load:.2f} s | {np.median(ms):.1f} ms "
            f"| {rss:.0f} MB |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--worker", choices=["0", "1"], help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        print(probe(a.model, a.worker == "1"))
        return
    from xlmr_serverless.runtime.cpu import isa

    print(f"ISA {isa()}, 2 threads, {a.model}\n\n| prepacking | session load | b1/s16 p50 | "
          "peak RSS |\n|---|---:|---:|---:|")
    for _ in range(a.rounds):
        for flag in ("0", "1"):
            print(subprocess.run([sys.executable, "-m", "benchmarks.prepacking", a.model,
                                  "--worker", flag], capture_output=True, text=True,
                                 check=True).stdout.strip())


if __name__ == "__main__":
    main()
