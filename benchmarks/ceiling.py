"""The machine's reachable ops/s: one fp32 MatMul and one int8 MatMulInteger at a large square
size, in onnxruntime, so the report can say what fraction of it the model reaches."""
from __future__ import annotations

import time

import numpy as np
import onnx
from onnx import TensorProto, helper


def _session(graph: onnx.GraphProto, threads: int):
    import onnxruntime as ort

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def gemm_ceiling(n: int = 1024, threads: int = 2, reps: int = 10) -> dict[str, float]:
    """{'fp32_gflops': ..., 'int8_gops': ...} at an n x n x n product (best of `reps`)."""
    f32 = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                            [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
                             helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
                            [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    i8 = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["c"])], "mmi",
                           [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
                            helper.make_tensor_value_info("b", TensorProto.INT8, [n, n])],
                           [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])])
    rng = np.random.default_rng(0)
    feeds = {"fp32": {"a": rng.standard_normal((n, n), np.float32),
                      "b": rng.standard_normal((n, n), np.float32)},
             "int8": {"a": rng.integers(0, 255, (n, n), dtype=np.uint8),
                      "b": rng.integers(-127, 127, (n, n), dtype=np.int8)}}
    out = {}
    for name, graph in (("fp32", f32), ("int8", i8)):
        sess = _session(graph, threads)
        sess.run(None, feeds[name])
        best = min(_time(sess, feeds[name]) for _ in range(reps))
        out["fp32_gflops" if name == "fp32" else "int8_gops"] = 2 * n**3 / best / 1e9
    return out


def _time(sess, feed) -> float:
    t0 = time.perf_counter()
    sess.run(None, feed)
    return time.perf_counter() - t0


def encoder_flops(config: dict, batch: int, seq: int) -> float:
    """Multiply-adds x 2 of one encoder forward (projections, FFN, attention scores)."""
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    tokens = batch * seq
    per_layer = 2 * tokens * (4 * h * h + 2 * h * i) + 2 * 2 * batch * seq * seq * h
    return float(layers * per_layer)
