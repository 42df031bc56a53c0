"""onnxruntime's transformer optimizer (Attention, SkipLayerNorm, Gelu fusions) and the
fused-operator count that tests use to notice a torch upgrade losing them."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import onnx


def count_ops(path: Path) -> Counter[str]:
    """op_type -> count of a saved model (graph structure only, weights not loaded)."""
    proto = onnx.load(str(path), load_external_data=False)
    return Counter(node.op_type for node in proto.graph.node)


def optimize(src: Path, dst: Path, num_heads: int, hidden_size: int,
             external_data: bool) -> dict[str, int]:
    """Fuse `src` into `dst` for CPU; returns the fused-operator statistics."""
    from onnxruntime.transformers.optimizer import optimize_model

    model: Any = optimize_model(str(src), model_type="bert", num_heads=num_heads,
                                hidden_size=hidden_size, opt_level=0)
    model.save_model_to_file(str(dst), use_external_data_format=external_data)
    stats = model.get_fused_operator_statistics()
    return {k: int(v) for k, v in stats.items() if v}


def median_latency_ms(path: Path, feed: dict, runs: int = 7, threads: int | None = None) -> float:
    """Median wall time of one CPU session.run on `feed` (after a warm-up run)."""
    import time

    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    sess.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))
