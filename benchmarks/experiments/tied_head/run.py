"""The int8 tied LM head on a real bundle, measured: the bundle's fp32 file quantized with the
head kept in fp32 ("fp32 head") and with export.quantize.int8_head ("int8 GEMM"), against
fp32: top-1 / top-5 agreement, max |logit diff|, and p50 latency at batch 1 (the kernels
alone, on every formulation: benchmarks/experiments/head_kernels/run.py).

    python -m benchmarks.experiments.tied_head.run BUNDLE_WITH_FP32 [--seq-lens 16,128] [--runs 15]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.inputs import token_rows
from xlmr_serverless.export import quantize
from xlmr_serverless.runtime.manifest import read_manifest
from xlmr_serverless.runtime.session import create_session
from xlmr_serverless.runtime.tokenization import TextTokenizer, special_ids


def build_variants(fp32: Path, work: Path, hidden: int, intermediate: int) -> dict[str, Path]:
    """The default int8 recipe with and without the int8 head."""
    out = {}
    for name, head in (("fp32 head", False), ("int8 GEMM", True)):
        dst = work / f"{'gemm' if head else 'dq'}.onnx"
        recipe = quantize.Int8Recipe(name, int8_head=head)
        quantize.quantize_int8(fp32, dst, recipe, True, hidden, intermediate)
        out[name] = dst
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--seq-lens", default="16,128")
    ap.add_argument("--runs", type=int, default=15)
    a = ap.parse_args(argv)
    import onnx

    folder = Path(a.bundle)
    manifest = read_manifest(folder)
    fp32 = folder / manifest.file_for("fp32").path
    shapes = {i.name: tuple(i.dims) for i in onnx.load(str(fp32), load_external_data=False)
              .graph.initializer if len(i.dims) == 2}
    hidden = shapes[max(shapes, key=lambda k: shapes[k][0])][1]  # the tied table's width
    tok = TextTokenizer(folder / manifest.tokenizer["file"])
    sp = special_ids(manifest.special_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        files = {"fp32": fp32, **build_variants(fp32, Path(tmp), hidden, 4 * hidden)}
        sessions = {n: create_session(p, "cpu", None)[0] for n, p in files.items()}
        for seq in (int(s) for s in a.seq_lens.split(",")):
            ids = token_rows(tok, seq, 8, sp["cls"], sp["sep"], sp["mask"])
            feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            ref = sessions["fp32"].run(None, feed)[0]
            one = {k: v[:1] for k, v in feed.items()}
            for name, sess in sessions.items():
                got = sess.run(None, feed)[0]
                top5 = np.mean([len(set(np.argsort(-r)[:5]) & set(np.argsort(-g)[:5])) / 5
                                for r, g in zip(ref, got)])
                for _ in range(3):
                    sess.run(None, one)
                ms = []
                for _ in range(a.runs):
                    t = time.perf_counter()
                    sess.run(None, one)
                    ms.append((time.perf_counter() - t) * 1000)
                print(f"s{seq:<4} {name:10s} p50 {np.median(ms):7.1f} ms  top-1 "
                      f"{(ref.argmax(-1) == got.argmax(-1)).mean():.3f}  top-5 {top5:.3f}  "
                      f"max|diff| {np.abs(ref - got).max():.3f}")


if __name__ == "__main__":
    main()
