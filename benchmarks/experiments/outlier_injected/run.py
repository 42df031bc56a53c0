"""On the xlm-roberta-base shape with outlier channels injected the way trained encoders
carry them (tests/factory.inject_outliers: a few hidden dimensions of every LayerNorm that
feeds a layer `scale` times larger, the weights reading them as much smaller), which recipe
does the int8 gate ship, how accurate is it on held-out text, and how fast against the
recipe that keeps every FFN MatMul fp32?

Per scale: a random base-shaped feature-extraction checkpoint (seed 0), `xlmr export
--precision fp32,int8` (the gate at its default 0.99), the all-FFN-fp32 recipe written from
the bundle's fp32 file (`export/quantize.py: FP32_FFN`); held-out min sentence cosine against
fp32 (benchmarks/texts/accuracy.txt, batches of 16 padded as the runtime pads); b1 and b8 of 64
random tokens, each file in turn in one process, alternating rounds, loaded as the runtime
loads CPU files.

    python -m benchmarks.experiments.outlier_injected.run [--scales 1,100] [--dims 7,300,599]
        [--rounds 5] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.experiments.outlier_split.run import ROOT, report, session
from benchmarks.experiments.per_token.run import min_cosine, padded
from benchmarks.experiments.skip_layer_norm.run import session as plain_session
from benchmarks.experiments.skip_layer_norm.run import timed

SHAPE = {"hidden": 768, "layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scales", default="1,100")
    ap.add_argument("--dims", default="7,300,599")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tokenizers import Tokenizer

    from tests.factory import make_model
    from xlmr_serverless.export import quantize, validate
    from xlmr_serverless.export.build import ExportOptions, build_bundle
    from xlmr_serverless.runtime.cpu import isa
    from xlmr_serverless.runtime.session import CPU_DISABLED_OPTIMIZERS

    dims = tuple(int(d) for d in args.dims.split(","))
    held = validate.read_texts(ROOT / "benchmarks" / "texts" / "accuracy.txt")
    rows: list[dict[str, Any]] = []
    for scale in [float(s) for s in args.scales.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            model = make_model(work / "model", "feature-extraction",
                               outliers=(dims, scale) if scale != 1 else None, **SHAPE)
            bundle = work / "bundle"
            build_bundle(str(model), "feature-extraction", bundle,
                         ExportOptions(precisions=("fp32", "int8")), log=lambda _: None)
            manifest = json.loads((bundle / "manifest.json").read_text())
            gate = manifest["parity"]["int8_gate"]
            ffn = work / "fp32_ffn.onnx"
            quantize.quantize_int8(bundle / "model.fp32.onnx", ffn, quantize.FP32_FFN, True,
                                   SHAPE["hidden"], SHAPE["intermediate_size"])
            files = {"fp32": bundle / "model.fp32.onnx", "gate": bundle / "model.int8.onnx",
                     quantize.FP32_FFN.name: ffn}
            tok = Tokenizer.from_file(str(bundle / "tokenizer.json"))
            tok.no_padding()
            pad = manifest["special_tokens"]["pad"]["id"]
            ref = session(files["fp32"])
            accuracy = {name: min_cosine(ref, session(p), padded(tok, held, 16, pad))
                        for name, p in files.items() if name != "fp32"}
            sessions = {name: plain_session(p, 2, CPU_DISABLED_OPTIMIZERS)
                        for name, p in files.items()}
            ms: dict[str, dict[str, float]] = {name: {} for name in files}
            rng = np.random.default_rng(0)
            for b in (1, 8):
                ids = rng.integers(5, 250000, size=(b, 64)).astype(np.int64)
                ids[:, 0], ids[:, -1] = 0, 2
                for name, m in timed(sessions, {"input_ids": ids,
                                                "attention_mask": np.ones_like(ids)},
                                     args.rounds, 20).items():
                    ms[name][f"b{b}x64_ms"] = m
            total = {name: sum(v.values()) for name, v in ms.items()}
            rows.append({
                "scale": scale, "dims": dims,
                "gate_chose": next(f["recipe"] for f in manifest["files"]
                                   if f["precision"] == "int8"),
                "chosen_by": gate.get("chosen_by"),
                "tried": {r["recipe"]: r.get("rejected", "passed")
                          for r in manifest["parity"]["int8_recipes_tried"]},
                "held_out_b16": {k: f"{low:.4f} ({ok}/{n})" for k, (low, ok, n) in
                                 accuracy.items()},
                "ms": ms, "gate_speed_over_fp32_ffn": round(total[quantize.FP32_FFN.name] /
                                                            total["gate"], 2)})
            print(rows[-1], file=sys.stderr)
    report({"isa": isa(), "shape": SHAPE, "rounds": args.rounds, "rows": rows,
            "command": "python -m benchmarks.experiments.outlier_injected.run "
                       + " ".join(argv or sys.argv[1:])}, args.out)


if __name__ == "__main__":
    main()
