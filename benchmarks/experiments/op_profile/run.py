"""Where a bundle's time goes, per operator type: onnxruntime's own profiler over repeated runs
at batch 1 (real text from the bundle's tokenizer, a <mask> per row for fill-mask), the share
of each op type (MatMulInteger, DynamicQuantizeLinear, QAttention, LayerNorm, Gather, the
head...), and the fraction of this CPU's int8 GEMM ceiling the whole run reaches. The ISA is
named with every figure.

    python -m benchmarks.experiments.op_profile.run BUNDLE [--precision int8] [--seq-lens 16,128] [--runs 20]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.ceiling import encoder_flops, gemm_ceiling
from benchmarks.inputs import token_rows
from xlmr_serverless.runtime.cpu import cpu_model, isa
from xlmr_serverless.runtime.manifest import read_manifest
from xlmr_serverless.runtime.tokenization import TextTokenizer, special_ids


def profile(model: Path, feed: dict[str, np.ndarray], runs: int, threads: int,
            work: Path) -> tuple[dict[str, float], float]:
    """(op type -> total ms per run, wall ms per run) from onnxruntime's profiler."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    opts.enable_profiling = True
    opts.profile_file_prefix = str(work / "prof")
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    for _ in range(2 + runs):  # two warm-up runs, left out below
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    model_runs = sorted((e for e in events if e.get("cat") == "Session"
                         and e["name"] == "model_run"), key=lambda e: e["ts"])
    start = model_runs[2]["ts"]
    events = [e for e in events if e.get("ts", 0) >= start]
    per_op: dict[str, float] = defaultdict(float)
    wall = 0.0
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"] / 1000 / runs
        elif e.get("cat") == "Session" and e["name"] == "model_run":
            wall += e["dur"] / 1000 / runs
    return dict(per_op), wall


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--seq-lens", default="16,128")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--config", help="config.json of the checkpoint (for the ceiling fraction)")
    a = ap.parse_args(argv)
    folder = Path(a.bundle)
    manifest = read_manifest(folder)
    model = folder / manifest.file_for(a.precision).path
    tok = TextTokenizer(folder / manifest.tokenizer["file"])
    sp = special_ids(manifest.special_tokens)
    config = json.loads(Path(a.config).read_text()) if a.config else None
    ceiling = gemm_ceiling(threads=a.threads)["int8_gops"] if config else None
    print(f"# {manifest.task} {a.precision}: {manifest.name}\n\nISA {isa()} ({cpu_model()}), "
          f"{a.threads} threads, onnxruntime profiler, {a.runs} runs at batch 1"
          + (f"; int8 GEMM ceiling {ceiling:.0f} GOP/s" if ceiling else "") + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        for seq in (int(s) for s in a.seq_lens.split(",")):
            ids = token_rows(tok, seq, 1, sp["cls"], sp["sep"],
                             sp["mask"] if manifest.task == "fill-mask" else None)
            feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            per_op, wall = profile(model, feed, a.runs, a.threads, Path(tmp))
            kernels = sum(per_op.values())
            line = f"## b1/s{seq}: {wall:.1f} ms a run ({kernels:.1f} ms in kernels)"
            if config and ceiling:
                gops = encoder_flops(config, 1, seq) / (wall / 1000) / 1e9
                line += f"; encoder {gops:.0f} GOP/s = {gops / ceiling:.0%} of the int8 ceiling"
            print(line + "\n\n| op type | ms | share |\n|---|---:|---:|")
            for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1]):
                if ms / kernels >= 0.005:
                    print(f"| {op} | {ms:.2f} | {ms / kernels:.1%} |")
            print()


if __name__ == "__main__":
    main()
