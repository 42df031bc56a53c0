"""Is 8-bit MatMulNBits (weights in blocks along K, activations quantized to int8 per block
of K with `accuracy_level` 4) the accurate int8 dynamic per-tensor quantization is not, on real
weights, and at what speed? Per-block activation scales keep an outlier channel's range to
its own block, where quantize_dynamic's per-tensor scale spreads it over the whole row.

On an fp32 bundle: files where chosen MatMuls are MatMulNBits 8-bit (onnxruntime's
MatMulNBitsQuantizer) and the others dynamic int8 per channel (quantize_dynamic), judged as
the gate judges (sentence cosine against fp32) on the gate's text, the calibration text and
the held-out text; timed at b1 (36 tokens), each file in turn, alternating rounds.

    python -m benchmarks.experiments.nbits8.run FP32_BUNDLE [--rounds 5] [--out DIR]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from statistics import median
from typing import Any

import onnx

from benchmarks.experiments.outlier_split.run import (
    TEXT,
    alternating_ms,
    feeds,
    min_cosine,
    report,
    session,
    text_sets,
)


def variants(model: onnx.ModelProto, hidden: int, intermediate: int) -> dict[str, list[str]]:
    """Which MatMuls each file holds as MatMulNBits: none, the FFN down-projections, every
    FFN MatMul, every MatMul."""
    from xlmr_serverless.export.graph_index import ffn_matmuls

    inits = {i.name: tuple(i.dims) for i in model.graph.initializer}
    mms = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]
    down = [n.name for n in mms if inits[n.input[1]] == (intermediate, hidden)]
    return {"none": [], "FFN down-projections": down,
            "every FFN MatMul": ffn_matmuls(model, hidden, intermediate),
            "every MatMul": [n.name for n in mms]}


def build(src: Path, nbits: list[str], block: int, folder: Path, name: str) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(src))
    if nbits:
        others = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in nbits]
        q = MatMulNBitsQuantizer(model, bits=8, block_size=block, is_symmetric=True,
                                 accuracy_level=4, nodes_to_exclude=others)
        q.process()
        model = q.model.model
    staged, dst = folder / f"{name}.in.onnx", folder / f"{name}.onnx"
    onnx.save(model, str(staged))
    quantize_dynamic(str(staged), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul", "Attention"],
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return dst


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    from xlmr_serverless.runtime.cpu import isa

    tok, sets = text_sets(args.bundle)
    fp32 = args.bundle / "model.fp32.onnx"
    model = onnx.load(str(fp32))
    dims = [tuple(i.dims) for i in model.graph.initializer if len(i.dims) == 2]
    intermediate, hidden = next((a, b) for a, b in dims if a == 4 * b)
    ref = session(fp32)
    rows, files = [], {"fp32": fp32}
    with tempfile.TemporaryDirectory() as tmp:
        plans = [(label, nodes, 32) for label, nodes in variants(model, hidden, intermediate).items()]
        plans.append(("every MatMul", variants(model, hidden, intermediate)["every MatMul"], 128))
        for i, (label, nodes, block) in enumerate(plans):
            path = build(fp32, nodes, block, Path(tmp), f"v{i}")
            got = session(path)
            row: dict[str, Any] = {"MatMulNBits 8-bit": label, "block": block if nodes else None,
                   "nodes": len(nodes)}
            for name, fs in sets.items():
                low, ok = min_cosine(ref, got, fs)
                row[f"{name}_min_cosine"] = round(low, 4)
                row[f"{name}_at_0.99"] = f"{ok}/{len(fs)}"
            rows.append(row)
            files[f"v{i}"] = path
            print(row, file=sys.stderr)
        feed = feeds(tok, [TEXT])[0]
        ms = alternating_ms(files, feed, args.rounds)
    for i, row in enumerate(rows):
        row["b1_ms"] = round(median(ms[f"v{i}"]), 3)
    result = {"isa": isa(), "tokens": int(feed["input_ids"].size), "rounds": args.rounds,
              "fp32_b1_ms": round(median(ms["fp32"]), 3), "rows": rows,
              "command": "python -m benchmarks.experiments.nbits8.run "
                         + " ".join(argv or sys.argv[1:])}
    report(result, args.out)


if __name__ == "__main__":
    main()
