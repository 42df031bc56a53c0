"""A model at its real size, end to end: `xlmr export` (wall time, peak RSS), each bundle
file's size, session load (time, peak RSS), the Lambda handler's cold start, and latency at
b1/16, b1/128 and b8/128 per precision on 2 threads, beside PyTorch fp32 where it fits. Each
contender in its own process, alternating rounds (benchmarks/worker.py).

Usage: python -m benchmarks.sizes benchmarks/models/xlmr-large-fill-mask --task fill-mask
       [--precision int8 --precision int4] [--no-torch] [--output DIR]"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.harness import (
    RESULTS,
    Worker,
    alternate_rounds,
    check_same_machine,
    cold_start,
    machine,
    machine_folder,
)
from benchmarks.inputs import write_cases

CASES = ((1, 16), (1, 128), (8, 128))
LAMBDA_MEMORY_MB = 10_240  # the most a function can have
LAMBDA_IMAGE_BYTES = 10 * 1024**3
LAMBDA_INIT_S = 10.0


def export(model: Path, task: str, precisions: list[str], out: Path,
           min_agreement: float) -> dict[str, Any]:
    """`xlmr export` in a child process: wall seconds, peak RSS (the child's), its step log."""
    cmd = [sys.executable, "-m", "xlmr_serverless.cli", "export", "--model", str(model),
           "--task", task, "--output", str(out), "--min-agreement", str(min_agreement)]
    for p in precisions:
        cmd += ["--precision", p]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"export failed:\n{res.stderr[-3000:]}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    steps = [ln.strip() for ln in res.stderr.splitlines()
             if ln.lstrip().startswith(("[", "done in"))]
    return {"seconds": seconds, "peak_rss_mb": peak_kb / 1024, "steps": steps}


def checkpoint_bytes(model: Path) -> int:
    return sum(f.stat().st_size for f in model.glob("*.safetensors"))


def agreement(bundle: Path) -> dict[str, Any]:
    """Each quantized file against the bundle's own fp32 graph, as the gate measured it."""
    parity = json.loads((bundle / "manifest.json").read_text())["parity"]
    keys = ("recipe", "top1_agreement", "judged_rows", "near_ties", "topk_overlap", "score_error",
            "cosine_min", "rejected")
    return {p: [{k: t[k] for k in keys if k in t} for t in parity.get(f"{p}_recipes_tried", [])]
            for p in ("int8", "int4")}


def file_sizes(bundle: Path) -> dict[str, int]:
    m = json.loads((bundle / "manifest.json").read_text())
    return {f["precision"]: f["size"] + sum(e["size"] for e in f["external_data"])
            for f in m["files"]}


def handler_cold_start(bundle: Path, model: Path, task: str, precision: str) -> dict[str, Any]:
    """The Lambda handler's process start -> first 200 on `precision` (XLMR_PRECISION)."""
    before = os.environ.get("XLMR_PRECISION")
    os.environ["XLMR_PRECISION"] = precision
    try:
        return cold_start("lambda_handler", bundle, str(model), task, None)
    finally:
        if before is None:
            os.environ.pop("XLMR_PRECISION")
        else:
            os.environ["XLMR_PRECISION"] = before


def limits(result: dict[str, Any]) -> list[str]:
    """Where a figure misses a Lambda limit, and by how much."""
    notes = []
    for p, size in result["bundle_bytes"].items():
        if size > LAMBDA_IMAGE_BYTES:
            notes.append(f"{p}: bundle {size / 1e9:.2f} GB > the 10 GiB image limit")
    for p, c in result["cold_start"].items():
        if c.get("peak_rss_mb", 0) > LAMBDA_MEMORY_MB:
            notes.append(f"{p}: cold start peak {c['peak_rss_mb']:.0f} MB > 10,240 MB")
        if c.get("seconds", 0) > LAMBDA_INIT_S:
            notes.append(f"{p}: cold start {c['seconds']:.1f} s > Lambda's 10 s init")
    return notes


def markdown(result: dict[str, Any]) -> str:
    e = result["export"]
    lines = [f"# {result['model']} ({result['task']}), [{','.join(result['machine'].get('isa', []))}]"
             f" {result['machine'].get('cpu_model', '')}, {result['threads']} threads", "",
             f"checkpoint {result['checkpoint_bytes'] / 1e9:.2f} GB; export "
             f"{e['seconds']:.0f} s, peak RSS {e['peak_rss_mb'] / 1024:.2f} GB "
             f"({e['peak_rss_mb'] * 2**20 / result['checkpoint_bytes']:.1f}x the checkpoint)",
             "", "| contender | file MB | load s | peak RSS MB | " +
             " | ".join(f"b{b}/s{s} p50 ms" for b, s in CASES) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(CASES)]
    for name, c in result["contenders"].items():
        lat = " | ".join(f"{c['latency_ms'][f'b{b}_s{s}']['p50']:.1f}" for b, s in CASES)
        lines.append(f"| {name} | {c['file_mb']:.1f} | {c['load_s']:.2f} | "
                     f"{c['peak_rss_mb']:.0f} | {lat} |")
    lines += ["", "| handler cold start | seconds | peak RSS MB |", "|---|---:|---:|"]
    for p, c in result["cold_start"].items():
        lines.append(f"| {p} | {c.get('seconds', float('nan')):.2f} | "
                     f"{c.get('peak_rss_mb', float('nan')):.0f} |" if "error" not in c
                     else f"| {p} | {c['error']} | |")
    lines += ["", "| file | recipe | against fp32 ONNX |", "|---|---|---|"]
    for p, tried in result["agreement"].items():
        for t in tried:
            cosine = "cosine_min" in t  # the gate's share of sentences at cosine >= 0.99
            figures = ", ".join(
                f"{'cosine_agreement' if cosine and k == 'top1_agreement' else k} "
                + (f"{v:.4f}" if isinstance(v, float) else f"{v}")
                for k, v in t.items() if k not in ("recipe", "rejected"))
            lines.append(f"| {p} | {t['recipe']} | {figures} |")
    lines += ["", "Lambda limits: " + ("; ".join(result["limits"]) or "all met")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path)
    p.add_argument("--task", required=True)
    p.add_argument("--precision", action="append", default=[])
    p.add_argument("--no-torch", action="store_true", help="PyTorch fp32 does not fit (XL)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-agreement", type=float, default=0.0,
                   help="the export's gate; 0 records the figures without gating (random "
                        "weights: fp32's outputs are near ties)")
    p.add_argument("--output", type=Path)
    a = p.parse_args(argv)
    precisions = a.precision or ["int8", "int4"]
    out = a.output or RESULTS / machine_folder() / f"size-{a.model.name}"
    check_same_machine(out)
    work = Path(tempfile.mkdtemp(prefix="xlmr-sizes-"))
    from xlmr_serverless.runtime.manifest import read_manifest
    from xlmr_serverless.runtime.tokenization import TextTokenizer, special_ids

    try:
        sys.stderr.write("exporting ...\n")
        bundle = work / "bundle"
        exported = export(a.model, a.task, precisions, bundle, a.min_agreement)
        manifest = read_manifest(bundle)
        specials = special_ids(manifest.special_tokens)
        cases = [c for c in write_cases(bundle, TextTokenizer(bundle / "tokenizer.json"), specials,
                                        [1, 8], [16, 128], a.task, work / "cases")
                 if (c["batch"], c["seq"]) in CASES]
        base = {"cases": cases, "mask_id": specials.get("mask"), "threads": a.threads,
                "model": str(a.model), "task": a.task}
        specs = {f"bundle_{q}": {**base, "kind": "bundle", "bundle": str(bundle), "precision": q}
                 for q in precisions}
        if not a.no_torch:
            specs["pytorch_fp32"] = {**base, "kind": "torch"}
        workers = {name: Worker(name, spec) for name, spec in specs.items()}
        try:
            lat = alternate_rounds(a.rounds, workers, cases)
            contenders = {
                name: {"load_s": w.load_s, "peak_rss_mb": w.ask(op="rss")["peak_rss_mb"],
                       "file_mb": (file_sizes(bundle).get(specs[name].get("precision", ""))
                                   or checkpoint_bytes(a.model)) / 1e6,
                       "latency_ms": {c: report.percentiles(v) for c, v in lat[name].items()}}
                for name, w in workers.items()}
        finally:
            for w in workers.values():
                w.close()
        result = {"model": a.model.name, "task": a.task, "machine": machine(),
                  "threads": a.threads, "rounds": a.rounds,
                  "checkpoint_bytes": checkpoint_bytes(a.model), "export": exported,
                  "bundle_bytes": file_sizes(bundle), "contenders": contenders,
                  "agreement": agreement(bundle),
                  "cold_start": {q: handler_cold_start(bundle, a.model, a.task, q)
                                 for q in precisions}}
        result["limits"] = limits(result)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(result, indent=2))
        (out / "results.md").write_text(markdown(result))
        print(markdown(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
