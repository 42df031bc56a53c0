"""onnxruntime's transformer optimizer (Attention, SkipLayerNorm, Gelu fusions) and the
fused-operator count that tests use to notice a torch upgrade losing them."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import onnx

from ..runtime.session import CPU_DISABLED_OPTIMIZERS


def count_ops(path: Path) -> Counter[str]:
    """op_type -> count of a saved model (graph structure only, weights not loaded)."""
    proto = onnx.load(str(path), load_external_data=False)
    return Counter(node.op_type for node in proto.graph.node)


MS_DOMAIN = "com.microsoft"  # the fused operators' domain


def optimize(src: Path, dst: Path, num_heads: int, hidden_size: int,
             external_data: bool, skip_layer_norm: bool = False) -> dict[str, int]:
    """Fuse `src` into `dst` (for CPU; `skip_layer_norm` for CUDA: fusion_options), the
    weights read only where a fusion needs them and the weights a fusion makes written to
    disk as they are made (export/external.py); returns the fused-operator statistics."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    from .external import load_graph, new_weights_to_disk, save_consolidated, weights_on_disk

    folder = Path(src).resolve().parent
    made = folder / f"{Path(dst).name}.fused.data"  # the fusions' new weights, until saved
    with weights_on_disk(folder), new_weights_to_disk(Path(made.name)):
        model: Any = optimize_model(load_graph(src), model_type="bert", num_heads=num_heads,
                                    hidden_size=hidden_size, opt_level=0,
                                    optimization_options=fusion_options(FusionOptions("bert"),
                                                                        skip_layer_norm))
    model.topological_sort()  # what OnnxModel.save does before writing, which this replaces
    proto = model.model
    if any(n.domain == MS_DOMAIN for n in proto.graph.node) and \
            not any(o.domain == MS_DOMAIN for o in proto.opset_import):
        proto.opset_import.add(domain=MS_DOMAIN, version=1)
    save_consolidated(proto, dst, folder, external_data)
    made.unlink(missing_ok=True)
    stats = model.get_fused_operator_statistics()
    return {k: int(v) for k, v in stats.items() if v}


def fusion_options(options: Any, skip_layer_norm: bool) -> Any:
    """The transformer optimizer's options, the SkipLayerNormalization fusions off unless asked
    for: on CPU onnxruntime's SkipLayerNormalization kernel is slower than the
    LayerNormalization and Adds it replaces (docs/design/skip-layer-norm.md)."""
    options.enable_skip_layer_norm = skip_layer_norm
    options.enable_bias_skip_layer_norm = skip_layer_norm
    return options


# Fusions stay unless they are clearly slower: slower in every alternating round and by more
# than this at the median (why rounds and a margin: docs/design/fusion-timing.md).
MARGIN = 0.05


def alternating_ms(paths: dict[str, Path], feed: dict, rounds: int = 5, runs: int = 3,
                   threads: int | None = None) -> dict[str, list[float]]:
    """Per-round median ms of one CPU session.run on `feed` for each graph, the graphs taking
    turns round by round (thread-pool spinning off, so an idle pool slows no other)."""
    import time

    import numpy as np
    import onnxruntime as ort

    sessions = {}
    for name, path in paths.items():
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
        sessions[name] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"],
                                              disabled_optimizers=CPU_DISABLED_OPTIMIZERS)
        sessions[name].run(None, feed)
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, sess in sessions.items():
            ms = []
            for _ in range(runs):
                t0 = time.perf_counter()
                sess.run(None, feed)
                ms.append((time.perf_counter() - t0) * 1000)
            times[name].append(float(np.median(ms)))
    return times


def clearly_slower(slow: list[float], fast: list[float], margin: float = MARGIN) -> bool:
    """`slow` lost every round and its median is over `margin` above `fast`'s."""
    import numpy as np

    return all(a > b for a, b in zip(slow, fast)) and \
        float(np.median(slow)) > float(np.median(fast)) * (1 + margin)
