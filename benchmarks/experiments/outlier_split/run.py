"""Does splitting the outlier input channels of the FFN down-projections out of int8 (the
LLM.int8() decomposition: those few channels' product in fp32, the rest dynamic int8) give
accurate int8 on real weights without keeping whole MatMuls fp32?

On an fp32 bundle: the down-projections' input channels ranked by their peak |x| on the
calibration text; for each k, every down-projection rewritten as Gather(top-k channels) @
W[top-k] in fp32 + Gather(the rest) @ W[rest] in dynamic int8, everything else quantized as
the default recipe does (MatMul and Attention, per-tensor); judged as the gate judges
(sentence cosine against fp32) on the gate's text, the calibration text and the held-out
text; timed at b1 (36 tokens), each file in turn, alternating rounds.

    python -m benchmarks.experiments.outlier_split.run FP32_BUNDLE [--k 0,4,8,16,32] [--rounds 5]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

ROOT = Path(__file__).resolve().parents[3]
TEXT = ("Machine learning models are often deployed behind HTTP endpoints on serverless "
        "platforms where cold start time and memory use matter as much as raw throughput, so "
        "smaller graphs help.")


def down_projections(model: onnx.ModelProto, hidden: int, intermediate: int) -> list[onnx.NodeProto]:
    inits = {i.name: i for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits
            and tuple(inits[n.input[1]].dims) == (intermediate, hidden)]


def session(model: onnx.ModelProto | Path, threads: int = 2) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    src = model if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(str(src) if isinstance(src, Path) else src, opts,
                                providers=["CPUExecutionProvider"])


def feeds(tokenizer: Any, texts: list[str]) -> list[dict[str, np.ndarray]]:
    out = []
    for e in tokenizer.encode_batch(texts):
        ids = np.array([e.ids], dtype=np.int64)
        out.append({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    return out


def channel_peaks(model: onnx.ModelProto, nodes: list[onnx.NodeProto],
                  calib: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Each down-projection's input: the peak |x| of every channel over the calibration text."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for n in nodes:
        probe.graph.output.append(helper.make_tensor_value_info(n.input[0], onnx.TensorProto.FLOAT, None))
    sess = session(probe)
    names = [n.input[0] for n in nodes]
    peaks = {name: np.zeros(0) for name in names}
    for f in calib:
        outs = sess.run(names, f)
        for name, x in zip(names, outs):
            m = np.abs(x.reshape(-1, x.shape[-1])).max(0)
            peaks[name] = m if not peaks[name].size else np.maximum(peaks[name], m)
    return peaks


def split(model: onnx.ModelProto, nodes: list[onnx.NodeProto], peaks: dict[str, np.ndarray],
          k: int) -> tuple[onnx.ModelProto, list[str]]:
    """Each down-projection as its top-k channels in fp32 plus the rest; returns the graph and
    the fp32 MatMuls (to exclude from quantization)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if not k:
        return out, []
    inits = {i.name: i for i in out.graph.initializer}
    nodes_now = list(out.graph.node)
    keep_fp32 = []
    for n in nodes:
        node = next(m for m in nodes_now if m.name == n.name)
        w = numpy_helper.to_array(inits[node.input[1]])
        top = np.sort(np.argsort(-peaks[node.input[0]])[:k])
        rest = np.setdiff1d(np.arange(w.shape[0]), top)
        base = node.name or node.output[0]
        tensors = {f"{base}.top_idx": top.astype(np.int64), f"{base}.rest_idx": rest.astype(np.int64),
                   f"{base}.w_top": w[top], f"{base}.w_rest": w[rest]}
        out.graph.initializer.extend(numpy_helper.from_array(v, name) for name, v in tensors.items())
        new = [helper.make_node("Gather", [node.input[0], f"{base}.top_idx"], [f"{base}.x_top"], axis=-1),
               helper.make_node("Gather", [node.input[0], f"{base}.rest_idx"], [f"{base}.x_rest"], axis=-1),
               helper.make_node("MatMul", [f"{base}.x_top", f"{base}.w_top"], [f"{base}.y_top"],
                                name=f"{base}.fp32"),
               helper.make_node("MatMul", [f"{base}.x_rest", f"{base}.w_rest"], [f"{base}.y_rest"],
                                name=f"{base}.int8"),
               helper.make_node("Add", [f"{base}.y_top", f"{base}.y_rest"], [node.output[0]])]
        at = nodes_now.index(node)
        nodes_now[at:at + 1] = new
        keep_fp32.append(f"{base}.fp32")
    del out.graph.node[:]
    out.graph.node.extend(nodes_now)
    return out, keep_fp32


def quantized(model: onnx.ModelProto, exclude: list[str], folder: Path, name: str) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = folder / f"{name}.in.onnx", folder / f"{name}.onnx"
    onnx.save(model, str(src))
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                     op_types_to_quantize=["MatMul", "Attention"],
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return dst


def sentence(hidden: np.ndarray) -> np.ndarray:
    v = hidden[0].mean(0)
    return v / np.linalg.norm(v)


def min_cosine(ref: Any, got: Any, fs: list[dict[str, np.ndarray]]) -> tuple[float, int]:
    cos = [float(sentence(ref.run(None, f)[0]) @ sentence(got.run(None, f)[0])) for f in fs]
    return min(cos), sum(c >= 0.99 for c in cos)


def text_sets(bundle: Path) -> tuple[Any, dict[str, list[dict[str, np.ndarray]]]]:
    """The bundle's tokenizer, and one-text feeds of the gate's text, the calibration text
    (export/calibration.py's split) and the held-out text (benchmarks/texts/accuracy.txt)."""
    sys.path.insert(0, str(ROOT))
    from tokenizers import Tokenizer

    from xlmr_serverless.export import calibration, validate

    tok = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    texts = calibration.split_texts(None)
    return tok, {"judged": feeds(tok, texts.judged), "calibration": feeds(tok, texts.calibration),
                 "held_out": feeds(tok, validate.read_texts(ROOT / "benchmarks" / "texts" /
                                                            "accuracy.txt"))}


def report(result: dict[str, Any], out: Path | None) -> None:
    """Print the result as JSON, and write it to OUT/results.json where asked."""
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(text + "\n")


def alternating_ms(files: dict[str, Path], feed: dict[str, np.ndarray],
                   rounds: int) -> dict[str, list[float]]:
    """Each file's median ms of 50 runs per round, the files in turn, round after round."""
    return rounds_ms({name: session(p) for name, p in files.items()}, feed, rounds, 50, 5)


def rounds_ms(sessions: dict[str, Any], feed: dict[str, np.ndarray], rounds: int, runs: int,
              warmup: int) -> dict[str, list[float]]:
    """Each session's median ms of `runs` per round (after `warmup` runs), in turn, round
    after round."""
    ms: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, s in sessions.items():
            for _ in range(warmup):
                s.run(None, feed)
            t = []
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(None, feed)
                t.append((time.perf_counter() - t0) * 1000)
            ms[name].append(median(t))
    return ms


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--k", default="0,4,8,16,32")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    from xlmr_serverless.runtime.cpu import isa

    tok, sets = text_sets(args.bundle)
    judged, calib, held = sets["judged"], sets["calibration"], sets["held_out"]
    fp32_path = args.bundle / "model.fp32.onnx"
    model = onnx.load(str(fp32_path))
    cfg = json.loads((Path(args.bundle) / "manifest.json").read_text())
    inits = {i.name: tuple(i.dims) for i in model.graph.initializer}
    dims = sorted({d for d in inits.values() if len(d) == 2}, key=lambda d: -d[0] * d[1])
    intermediate, hidden = next((a, b) for a, b in dims if a == 4 * b)
    nodes = down_projections(model, hidden, intermediate)
    peaks = channel_peaks(model, nodes, calib)
    ref = session(fp32_path)
    rows, files = [], {"fp32": fp32_path}
    with tempfile.TemporaryDirectory() as tmp:
        for k in [int(x) for x in args.k.split(",")]:
            graph, exclude = split(model, nodes, peaks, k)
            path = quantized(graph, exclude, Path(tmp), f"k{k}")
            got = session(path)
            row = {"k": k, "channels_fp32": f"{k} of {intermediate} per down-projection",
                   **{f"{name}_min_cosine": round(mc, 4) for name, (mc, _) in
                      (("judged", min_cosine(ref, got, judged)),
                       ("calibration", min_cosine(ref, got, calib)))}}
            mc, ok = min_cosine(ref, got, held)
            row.update(held_out_min_cosine=round(mc, 4), held_out_passing=f"{ok}/{len(held)}")
            rows.append(row)
            files[f"k={k}"] = path
            print(row, file=sys.stderr)
        feed = feeds(tok, [TEXT])[0]
        ms = alternating_ms(files, feed, args.rounds)
    for row in rows:
        row["b1_ms"] = round(median(ms[f"k={row['k']}"]), 3)
    result = {"isa": isa(), "bundle": cfg.get("model_id"), "tokens": int(feed["input_ids"].size),
              "rounds": args.rounds, "fp32_b1_ms": round(median(ms["fp32"]), 3), "rows": rows,
              "command": "python -m benchmarks.experiments.outlier_split.run "
                         + " ".join(argv or sys.argv[1:])}
    report(result, args.out)


if __name__ == "__main__":
    main()
