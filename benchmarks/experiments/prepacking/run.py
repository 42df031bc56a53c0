"""What onnxruntime's weight prepacking costs and buys on a bundle file: session load time,
b1/s16 latency and peak RSS with it on (the default), off (`session.disable_prepacking`), and
with the prepacked weights saved once beside an optimised copy of the graph and memory-mapped
from there (`session.save_external_prepacked_constant_initializers`, onnxruntime PR #23069:
the build-time alternative to packing at every cold start). Each in its own process,
alternating; the outputs of every mode are compared with the default's.

    python -m benchmarks.experiments.prepacking.run MODEL.onnx [--rounds 2] [--threads 2]
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

MODES = {"on": "on (default)", "off": "off", "saved": "saved prepacked, mapped"}


def options(threads: int, mode: str) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    if mode == "off":
        opts.add_session_config_entry("session.disable_prepacking", "1")
    if mode == "saved":  # the copy is optimised already
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return opts


def save_prepacked(model: Path, folder: Path) -> Path:
    """An optimised copy of `model` whose external data holds the prepacked weights too, as
    onnxruntime writes it (for this CPU's kernels: a copy is only valid on the ISA it was
    packed on)."""
    import onnxruntime as ort

    out = folder / "model.prepacked.onnx"
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.optimized_model_filepath = str(out)
    opts.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                  out.name + ".data")
    opts.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                  "1024")
    opts.add_session_config_entry("session.save_external_prepacked_constant_initializers", "1")
    ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    return out


def feed_for(model: Path) -> dict[str, np.ndarray]:
    """16 tokens with one mask (the bundle's own mask id, read from the tokenizer.json beside
    the file: a trimmed vocabulary has its own; none for a file outside a bundle)."""
    from tokenizers import Tokenizer

    path = model.parent / "tokenizer.json"
    mask = Tokenizer.from_file(str(path)).token_to_id("<mask>") if path.exists() else None
    ids = np.array([[0, *range(100, 107), mask if mask is not None else 107,
                     *range(200, 206), 2]])
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def probe(path: Path, mode: str, threads: int, feed_from: Path, out: Path) -> str:
    import onnxruntime as ort

    t = time.perf_counter()
    sess = ort.InferenceSession(str(path), options(threads, mode),
                               providers=["CPUExecutionProvider"])
    load = time.perf_counter() - t
    feed = feed_for(feed_from)
    np.save(out, sess.run(None, feed)[0])
    ms = []
    for _ in range(15):
        t = time.perf_counter()
        sess.run(None, feed)
        ms.append((time.perf_counter() - t) * 1000)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return f"| {MODES[mode]} | {load:.2f} s | {np.median(ms):.1f} ms | {rss:.0f} MB |"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)  # mode, file, feed, out
    a = ap.parse_args(argv)
    if a.worker:
        mode, path, feed, out = a.worker
        print(probe(Path(path), mode, a.threads, Path(feed), Path(out)))
        return
    from xlmr_serverless.runtime.cpu import isa

    with tempfile.TemporaryDirectory() as tmp:
        saved = save_prepacked(a.model, Path(tmp))
        sizes = {m: sum(f.stat().st_size for f in p.parent.glob(p.name + "*"))
                 for m, p in (("on", a.model), ("saved", saved))}
        print(f"ISA {isa()}, {a.threads} thread(s), {a.model}: {sizes['on'] / 1e6:.1f} MB "
              f"on disk; with the prepacked weights saved {sizes['saved'] / 1e6:.1f} MB\n\n"
              "| prepacking | session load | b1/s16 p50 | peak RSS |\n|---|---:|---:|---:|")
        for r in range(a.rounds):
            for mode in MODES:
                path = saved if mode == "saved" else a.model
                out = Path(tmp) / f"{mode}-{r}.npy"
                print(subprocess.run(
                    [sys.executable, "-m", "benchmarks.experiments.prepacking.run", str(a.model), "--threads",
                     str(a.threads), "--worker", mode, str(path), str(a.model), str(out)],
                    capture_output=True, text=True, check=True).stdout.strip())
        ref = np.load(Path(tmp) / "on-0.npy")
        for mode in ("off", "saved"):
            diff = float(np.abs(np.load(Path(tmp) / f"{mode}-0.npy") - ref).max())
            print(f"\n{MODES[mode]}: largest difference from the default's output {diff:.2e}",
                  end="")
        print()


if __name__ == "__main__":
    main()
