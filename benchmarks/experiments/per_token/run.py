"""Which MatMuls need per-token activation scales on real weights, and what do they cost?
Per-tensor dynamic int8 gives a MatMul's whole batch one scale, so an outlier token (`<s>`, a
batchmate's `</s>`, padding) costs every other token its resolution (export/per_token.py).

On an fp32 bundle: the graph smoothed as the gate smooths it (`--smoothing norm`: every input
a normalization produced), only the FFN up-projections' inputs (`ffn`) or not at all (`none`),
calibration text; then per-token int8 (export/per_token.py: a scale per row) on no MatMul, the
FFN down-projections, the k FFN MatMuls of largest token spread (their input's largest token
peak over the median, calibration text) and every FFN MatMul, at each zero point after GELU
asked (`--gelu-zero`); every other MatMul dynamic int8 per channel. Judged as the gate judges (sentence
cosine against fp32) on the gate's text and the calibration text one sentence a run, and on the
held-out text batched as the runtime batches (sorted by length, padded with the bundle's pad
id): alone, in 16s and in one batch of 48. Timed at b1 and b8 of 64 random tokens, each file
in turn in one process, alternating rounds, loaded as the runtime loads CPU files, beside the
fp32 file, the all-int8 default recipe and, where given, another int8 file (`--other`, loaded
with onnxruntime's defaults: Optimum's as Optimum loads it).

    python -m benchmarks.experiments.per_token.run FP32_BUNDLE [--smoothing norm,ffn,none]
        [--k 2,4,6] [--gelu-zero 8,16,32] [--rounds 5] [--other NAME=FILE.onnx] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from benchmarks.experiments.outlier_split.run import ROOT, report, session
from benchmarks.experiments.skip_layer_norm.run import session as plain_session
from benchmarks.experiments.skip_layer_norm.run import timed

SHAPES = ((1, 64), (8, 64))


def padded(tok: Any, texts: list[str], size: int, pad_id: int) -> list[dict[str, np.ndarray]]:
    """The texts sorted by length and cut into batches of `size`, each padded to its longest
    row with `pad_id` (the runtime's batching)."""
    rows = sorted((e.ids for e in tok.encode_batch(texts)), key=len)
    out = []
    for i in range(0, len(rows), size):
        chunk = rows[i:i + size]
        ids = np.full((len(chunk), max(map(len, chunk))), pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for j, r in enumerate(chunk):
            ids[j, :len(r)], mask[j, :len(r)] = r, 1
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def sentences(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean-pooled, normalized sentence vectors (the bundle's sentence embedding)."""
    m = mask[..., None].astype(np.float32)
    v = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def min_cosine(ref: Any, got: Any, feeds: list[dict[str, np.ndarray]]) -> tuple[float, int, int]:
    """Lowest sentence cosine against fp32, how many rows reach 0.99, of how many."""
    cos = np.concatenate([(sentences(ref.run(None, f)[0], f["attention_mask"]) *
                           sentences(got.run(None, f)[0], f["attention_mask"])).sum(1)
                          for f in feeds])
    return float(cos.min()), int((cos >= 0.99).sum()), len(cos)


def variants(spread: dict[str, float], ks: list[int]) -> dict[str, list[str]]:
    """Per-token node sets: none, the down-projections, the top k by token spread, all FFN."""
    ranked = sorted(spread, key=lambda n: -spread[n])
    down = [n for n in spread if "/output/dense/" in n]
    out = {"none": [], f"{len(down)} down-projections": down}
    out.update({f"top {k} by token spread": ranked[:k] for k in ks if 0 < k < len(ranked)})
    out[f"every FFN MatMul ({len(ranked)})"] = ranked
    return out


def per_token_file(src: Path, dst: Path, nodes: list[str], hidden: int, intermediate: int,
                   gelu_zero: int) -> None:
    """`src` quantized per channel, `nodes` written as per-token int8 with `gelu_zero` as the
    zero point after GELU, as export/quantize.py writes a per-token recipe (which names its
    nodes by role: "ffn", "all")."""
    from xlmr_serverless.export import per_token, quantize
    from xlmr_serverless.export.external import load_graph, save_consolidated

    recipe = quantize.Int8Recipe("per_channel", per_channel=True, fp32_nodes=tuple(nodes))
    quantize.quantize_int8(src, dst, recipe, True, hidden, intermediate)
    if nodes:
        proto = per_token.per_token_int8(load_graph(dst), nodes, dst.parent,
                                         dst.name + ".rows.data", gelu_zero)
        save_consolidated(proto, dst, dst.parent)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--k", default="2,4,6", help="top-k node sets ('' for none)")
    ap.add_argument("--smoothing", default="norm",
                    help="comma-separated: norm (every site after a normalization, as the "
                         "gate smooths), ffn (the FFN up-projections' only), none")
    ap.add_argument("--gelu-zero", default=str(16),
                    help="comma-separated uint8 zero points after GELU to compare")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--other", action="append", default=[], help="NAME=FILE.onnx, timed too")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tokenizers import Tokenizer

    from xlmr_serverless.export import calibration, per_token, quantize, smoothing, validate
    from xlmr_serverless.export.external import load_graph
    from xlmr_serverless.runtime.cpu import isa
    from xlmr_serverless.runtime.session import CPU_DISABLED_OPTIMIZERS
    from xlmr_serverless.runtime.tasks import task_spec

    manifest = json.loads((args.bundle / "manifest.json").read_text())
    pad = manifest["special_tokens"]["pad"]["id"]
    tok = Tokenizer.from_file(str(args.bundle / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(manifest["max_length"])
    texts = calibration.split_texts(None)
    spec = task_spec(manifest["task"])
    calib = list(validate.encode_batches(tok, texts.calibration, spec, None, pad,
                                         manifest["max_length"]))
    held = validate.read_texts(ROOT / "benchmarks" / "texts" / "accuracy.txt")
    sets = {"judged": padded(tok, texts.judged, 1, pad),
            "calibration": padded(tok, texts.calibration, 1, pad),
            **{f"held_out_b{n}": padded(tok, held, n, pad) for n in (1, 16, len(held))}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fp32 = work / "fp32.onnx"
        proto = onnx.load(str(args.bundle / "model.fp32.onnx"))
        onnx.save(proto, str(fp32), save_as_external_data=True, location="fp32.onnx.data")
        dims = [tuple(i.dims) for i in proto.graph.initializer if len(i.dims) == 2]
        intermediate, hidden = next((a, b) for a, b in dims if a == 4 * b)
        del proto
        sites = smoothing.sites(load_graph(fp32), "norm")
        ffn = per_token.matmuls(load_graph(fp32), "ffn", hidden, intermediate)
        ranges = calibration.channel_absmax(fp32, calib, [s.tensor for s in sites])
        sources = {"none": fp32}
        for which in args.smoothing.split(","):
            if which != "none":
                chosen = [s for s in sites if which == "norm" or set(s.nodes) <= set(ffn)]
                sources[which] = work / f"smoothed_{which}.onnx"
                smoothing.smooth(fp32, sources[which], chosen, ranges)
        spread = per_token.token_spread(fp32, calib, ffn)
        ref = session(fp32)
        files: dict[str, Path] = {"fp32": fp32}
        default = work / "default.onnx"
        quantize.quantize_int8(fp32, default, quantize.Int8Recipe("default"), True, hidden,
                               intermediate)
        files["all int8 (default recipe)"] = default
        rows = []
        plans = [(which, label, nodes, zero) for which in args.smoothing.split(",")
                 for label, nodes in variants(spread, [int(k) for k in args.k.split(",")
                                                       if k]).items()
                 for zero in ([per_token.GELU_ZERO] if not nodes else
                              [int(z) for z in args.gelu_zero.split(",")])]
        for i, (which, label, nodes, zero) in enumerate(plans):
            path = work / f"int8_{i}.onnx"
            per_token_file(sources[which], path, nodes, hidden, intermediate, zero)
            got = session(path)
            label = f"smoothing {which}, per-token int8 on {label}" + \
                (f", zero point {zero} after GELU" if nodes and "," in args.gelu_zero else "")
            row: dict[str, Any] = {"file": label, "nodes": nodes}
            for name, feeds in sets.items():
                low, ok, n = min_cosine(ref, got, feeds)
                row[name] = f"{low:.4f} ({ok}/{n})"
            rows.append(row)
            files[label] = path
            print({k: v for k, v in row.items() if k != "nodes"}, file=sys.stderr)
        # the project's files as the runtime loads them on CPU, another's as onnxruntime does
        sessions = {name: plain_session(p, args.threads, CPU_DISABLED_OPTIMIZERS)
                    for name, p in files.items()}
        sessions.update({name: plain_session(Path(p), args.threads, None)
                         for name, p in (o.split("=", 1) for o in args.other)})
        rng = np.random.default_rng(0)
        timing: dict[str, dict[str, float]] = {name: {} for name in sessions}
        for b, t in SHAPES:
            ids = rng.integers(5, tok.get_vocab_size() - 1, size=(b, t)).astype(np.int64)
            ids[:, 0], ids[:, -1] = manifest["special_tokens"]["cls"]["id"], \
                manifest["special_tokens"]["sep"]["id"]
            ms = timed(sessions, {"input_ids": ids, "attention_mask": np.ones_like(ids)},
                       args.rounds, 50)
            for name, m in ms.items():
                timing[name][f"b{b}x{t}_ms"] = m
    result = {"isa": isa(), "bundle": manifest.get("model_id"), "rounds": args.rounds,
              "threads": args.threads,
              "token_spread": spread, "rows": rows, "ms": timing,
              "command": "python -m benchmarks.experiments.per_token.run "
                         + " ".join(argv or sys.argv[1:])}
    report(result, args.out)


if __name__ == "__main__":
    main()
