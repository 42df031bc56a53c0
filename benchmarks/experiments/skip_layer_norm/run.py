"""Does onnxruntime's SkipLayerNormalization pay on CPU? It fuses a residual Add (and the
projection's bias) with the LayerNormalization after it, in the transformer optimizer
offline and again when a CPU session loads an int8 graph.

On an unfused fp32 graph (`xlmr export --no-optimize --precision fp32`): the transformer
optimizer's graph with the SkipLayerNormalization fusions on and off, each in fp32 and in int8
(the default dynamic recipe); the graphs without them also loaded with onnxruntime's
`SkipLayerNormFusion` disabled (as the runtime loads them on CPU). Timed at each shape, each
file in turn, alternating rounds, random token ids, for each thread count.

    python -m benchmarks.experiments.skip_layer_norm.run UNFUSED_FP32.onnx --heads 12 \
        --hidden 384 [--shapes 1x16,1x64,8x64,8x256] [--threads 2,1] [--rounds 5]
        [--other NAME=FILE.onnx] [--out DIR]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

from benchmarks.experiments.outlier_split.run import report, rounds_ms

DISABLED = ["SkipLayerNormFusion"]


def session(path: Path, threads: int, disabled: list[str] | None) -> Any:
    """A CPU session with `threads` intra-op threads, `disabled` optimizers off, and its
    thread pool not spinning once a run ends: several sessions take turns in one process
    here, and a pool that spins would take a core from the next."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"],
                                **({"disabled_optimizers": disabled} if disabled else {}))


def timed(sessions: dict[str, Any], feed: dict[str, np.ndarray], rounds: int,
          runs: int) -> dict[str, float]:
    """Each session's median ms: per round the median of `runs`, sessions in turn."""
    return {name: round(median(v), 3)
            for name, v in rounds_ms(sessions, feed, rounds, runs, 3).items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--hidden", type=int, required=True)
    ap.add_argument("--shapes", default="1x16,1x64,8x64,8x256")
    ap.add_argument("--threads", default="2,1")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--other", action="append", default=[],
                    help="NAME=FILE.onnx: another file, timed as onnxruntime loads it and "
                         "with SkipLayerNormFusion off")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    from xlmr_serverless.export import optimize, quantize
    from xlmr_serverless.runtime.cpu import isa

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files: dict[str, tuple[Path, list[str] | None]] = {}
        for fused in (True, False):
            tag = "SkipLayerNormalization" if fused else "LayerNormalization + Add"
            fp32 = Path(tmp) / f"fp32_{fused}.onnx"
            optimize.optimize(args.model, fp32, args.heads, args.hidden, True,
                              skip_layer_norm=fused)
            int8 = Path(tmp) / f"int8_{fused}.onnx"
            quantize.quantize_int8(fp32, int8, quantize.Int8Recipe("default"), True,
                                   args.hidden, 4 * args.hidden)
            for precision, path in (("fp32", fp32), ("int8", int8)):
                files[f"{precision}, {tag}"] = (path, None)
                if not fused:
                    files[f"{precision}, {tag}, SkipLayerNormFusion off"] = (path, DISABLED)
        for name, path in (o.split("=", 1) for o in args.other):
            files[name] = (Path(path), None)
            files[f"{name}, SkipLayerNormFusion off"] = (Path(path), DISABLED)
        rng = np.random.default_rng(0)
        for threads in [int(t) for t in args.threads.split(",")]:
            sessions = {name: session(p, threads, d) for name, (p, d) in files.items()}
            for shape in args.shapes.split(","):
                b, t = (int(x) for x in shape.split("x"))
                ids = rng.integers(5, 30000, size=(b, t)).astype(np.int64)
                ids[:, 0], ids[:, -1] = 0, 2
                feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
                ms = timed(sessions, feed, args.rounds, max(5, int(400 / (b * t) ** 0.8)))
                rows.append({"threads": threads, "shape": shape, "ms": ms})
                print(rows[-1], file=sys.stderr)
    report({"isa": isa(), "model": str(args.model), "rounds": args.rounds, "rows": rows,
            "command": "python -m benchmarks.experiments.skip_layer_norm.run "
                       + " ".join(argv or sys.argv[1:])}, args.out)


if __name__ == "__main__":
    main()
