"""The tied LM head's product on this CPU, onnxruntime only: every formulation of
logits = h @ W^T (W the [vocab, hidden] embedding table) that a bundle could ship, timed at
several numbers of rows (masks) on random values, with the ISA named. Each formulation runs in
its own process (thread pools of two sessions in one process slow each other), rounds alternate.

    python -m benchmarks.experiments.head_kernels.run [--vocab 250002] [--hidden 768] [--rows 1,16,128]

Formulations:
- table_left_s8s8: int8 W (as stored) @ int8 q(h)^T, MatMulInteger (the int8 head until now)
- acts_left_u8s8: quantize_dynamic of h @ T, T = W^T stored [hidden, vocab] int8: dynamic u8
  activations on the left, a constant (prepacked) int8 weight on the right, as Optimum has it
- matmulnbits8: MatMulNBits, 8-bit blocks of 32 of W as stored ([N, K]), accuracy_level 4
- shipped: what export writes (export/quantize.py:int8_head): acts_left_u8s8 on the table the
  embedding Gather shares, the head's activations quantized to 7 bits (no int16 saturation on
  AVX2)
- fp32: h @ W^T in fp32
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from xlmr_serverless.runtime.cpu import isa

FORMULATIONS = ("table_left_s8s8", "acts_left_u8s8", "shipped", "matmulnbits8", "fp32")


def build(name: str, folder: Path, vocab: int, hidden: int, seed: int = 0) -> Path:
    """One formulation's graph (input h [rows, hidden] -> logits [rows, vocab])."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((vocab, hidden)) * 0.05).astype(np.float32)
    h = helper.make_tensor_value_info("h", TensorProto.FLOAT, ["rows", hidden])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["rows", vocab])
    path = folder / f"{name}.onnx"

    def save(nodes, inits, opset=17):
        graph = helper.make_graph(nodes, name, [h], [out], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                        helper.make_opsetid("com.microsoft", 1)])
        onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data")
        return path

    if name == "fp32":
        return save([helper.make_node("MatMul", ["h", "T"], ["logits"])],
                    [numpy_helper.from_array(np.ascontiguousarray(w.T), "T")])
    if name == "acts_left_u8s8":
        src = save([helper.make_node("MatMul", ["h", "T"], ["logits"])],
                   [numpy_helper.from_array(np.ascontiguousarray(w.T), "T")])
        from onnxruntime.quantization import QuantType, quantize_dynamic

        dst = folder / "acts_left_q.onnx"
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                         use_external_data_format=True)
        return dst
    if name == "shipped":  # the table shared with an embedding Gather, as in a bundle
        import onnx

        from xlmr_serverless.export.quantize import int8_head

        ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 1])
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["h", "T"], ["logits"]),
             helper.make_node("Gather", ["T", "ids"], ["row"], axis=1)], name, [h, ids],
            [out, helper.make_tensor_value_info("row", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(np.ascontiguousarray(w.T), "T")])
        src = folder / "shipped_src.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                  str(src), save_as_external_data=True, location=src.name + ".data")
        from onnxruntime.quantization import QuantType, quantize_dynamic

        dst = folder / "shipped_q.onnx"
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gather"], use_external_data_format=True)
        proto = onnx.load(str(dst))
        assert int8_head(proto)
        onnx.save(proto, str(path), save_as_external_data=True, location=path.name + ".data")
        return path
    if name == "matmulnbits8":
        src = save([helper.make_node("MatMul", ["h", "T"], ["logits"])],
                   [numpy_helper.from_array(np.ascontiguousarray(w.T), "T")])
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            MatMulNBitsQuantizer,
        )

        config = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, bits=8,
                                              accuracy_level=4)
        quant = MatMulNBitsQuantizer(onnx.load(str(src)), algo_config=config)
        quant.process()
        dst = folder / "nbits_q.onnx"
        quant.model.save_model_to_file(str(dst), use_external_data_format=True)
        return dst
    if name == "table_left_s8s8":  # the int8 head as export.quantize.int8_head_nodes writes it
        scale = np.abs(w).max() / 127
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        nodes = [
            helper.make_node("Transpose", ["h"], ["hT"], perm=[1, 0]),
            helper.make_node("Abs", ["hT"], ["abs"]),
            helper.make_node("ReduceMax", ["abs"], ["max"], axes=[-2], keepdims=1),
            helper.make_node("Div", ["max", "c63"], ["s"]),
            helper.make_node("Div", ["hT", "s"], ["div"]),
            helper.make_node("Round", ["div"], ["round"]),
            helper.make_node("Cast", ["round"], ["q"], to=TensorProto.INT8),
            helper.make_node("MatMulInteger", ["W", "q", "", "zero"], ["i32"]),
            helper.make_node("Cast", ["i32"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["ws", "s"], ["scales"]),
            helper.make_node("Mul", ["f", "scales"], ["lt"]),
            helper.make_node("Transpose", ["lt"], ["logits"], perm=[1, 0]),
        ]
        inits = [numpy_helper.from_array(q, "W"),
                 numpy_helper.from_array(np.array(scale, np.float32), "ws"),
                 numpy_helper.from_array(np.array(63, np.float32), "c63"),
                 numpy_helper.from_array(np.array(0, np.int8), "zero")]
        return save(nodes, inits)
    raise ValueError(name)


def time_one(path: Path, rows: list[int], hidden: int, runs: int, threads: int) -> dict:
    """In this process: p50 ms per row count, and the logits of a fixed h (for agreement)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    out = {}
    extra = {"ids": np.zeros((1, 1), np.int64)} if "ids" in {i.name for i in sess.get_inputs()} \
        else {}
    for r in rows:
        h = rng.standard_normal((r, hidden)).astype(np.float32)
        sess.run(None, {"h": h, **extra})
        ms = []
        for _ in range(runs):
            t = time.perf_counter()
            sess.run(None, {"h": h, **extra})
            ms.append((time.perf_counter() - t) * 1000)
        out[str(r)] = float(np.median(ms))
    probe = np.random.default_rng(2).standard_normal((8, hidden)).astype(np.float32)
    np.save(path.with_suffix(".probe.npy"), sess.run(None, {"h": probe, **extra})[0])
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab", type=int, default=250002)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--rows", default="1,16,128")
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default=",".join(FORMULATIONS))
    ap.add_argument("--worker", nargs=2, metavar=("PATH", "ROWS"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        print(json.dumps(time_one(Path(a.worker[0]), [int(x) for x in a.worker[1].split(",")],
                                  a.hidden, a.runs, a.threads)))
        return
    names = a.only.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        paths = {n: build(n, Path(tmp), a.vocab, a.hidden) for n in names}
        timings: dict[str, list[dict]] = {n: [] for n in names}
        for _ in range(a.rounds):
            for n in names:
                res = subprocess.run([sys.executable, "-m", "benchmarks.experiments.head_kernels.run",
                                      "--hidden",
                                      str(a.hidden), "--runs", str(a.runs), "--threads",
                                      str(a.threads), "--worker", str(paths[n]), a.rows],
                                     capture_output=True, text=True, check=True)
                timings[n].append(json.loads(res.stdout.strip().splitlines()[-1]))
        ref = np.load(paths["fp32"].with_suffix(".probe.npy")) if "fp32" in paths else None
        print(f"ISA {isa()}, {a.threads} threads, vocab {a.vocab} x hidden {a.hidden}; p50 ms "
              f"(median of {a.rounds} alternating rounds, {a.runs} runs each)")
        print(f"| rows | {' | '.join(names)} |\n|---:|{'---:|' * len(names)}")
        for r in a.rows.split(","):
            print(f"| {r} | " + " | ".join(f"{np.median([t[r] for t in timings[n]]):.1f}"
                                          for n in names) + " |")
        if ref is not None:
            for n in names:
                got = np.load(paths[n].with_suffix(".probe.npy"))
                top1 = float((got.argmax(-1) == ref.argmax(-1)).mean())
                print(f"{n}: top-1 vs fp32 {top1:.3f}, max|diff| {np.abs(got - ref).max():.4f}")


if __name__ == "__main__":
    main()
