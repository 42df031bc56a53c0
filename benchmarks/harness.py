"""`xlmr bench`: the bundle against PyTorch + transformers and Optimum, in one run. Each
contender lives in its own process and is asked in turn, round after round (A B C A B C ...),
with a short pause between contenders, so the machine's drift hits all alike."""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import ceiling, report
from .contenders import file_size
from .inputs import write_cases

PAUSE_S = 0.2


def progress(done: int, total: int, what: str) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {what[:50]:<50}")
    sys.stderr.flush()
    if done == total:
        sys.stderr.write("\n")


class Worker:
    """A contender's long-lived process."""

    def __init__(self, name: str, spec: dict[str, Any]) -> None:
        self.name, self.spec = name, spec
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.worker", json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env)
        ready = self._read()
        self.load_s = ready["load_s"]

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            raise RuntimeError(f"contender {self.name} died (exit {self.proc.poll()})")
        return json.loads(line)

    def ask(self, **req: Any) -> dict[str, Any]:
        assert self.proc.stdin
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def machine() -> dict[str, Any]:
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "processor": platform.processor()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        info["cpu_model"] = next(l.split(":", 1)[1].strip() for l in text.splitlines()
                                 if l.startswith("model name"))
        flags = next(l for l in text.splitlines() if l.startswith("flags")).split()
        info["isa"] = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    except (OSError, StopIteration):
        pass
    return info


def export_optimum(model: str, task: str, folder: Path, isa: list[str]) -> tuple[str | None, str]:
    """Optimum's own export and int8 (ORTQuantizer, the config that fits this CPU)."""
    try:
        import optimum.onnxruntime as opt
        from optimum.onnxruntime.configuration import AutoQuantizationConfig
    except ImportError as exc:
        return None, f"optimum-onnx not installed ({exc.name})"
    from .contenders import ORT

    m = getattr(opt, ORT[task]).from_pretrained(model, export=True)
    m.save_pretrained(folder)
    if platform.machine() in ("arm64", "aarch64"):
        qconfig, name = AutoQuantizationConfig.arm64(is_static=False, per_channel=False), "arm64"
    elif "avx512_vnni" in isa:
        qconfig, name = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False), "avx512_vnni"
    elif "avx512f" in isa:
        qconfig, name = AutoQuantizationConfig.avx512(is_static=False, per_channel=False), "avx512"
    else:
        qconfig, name = AutoQuantizationConfig.avx2(is_static=False, per_channel=False), "avx2"
    opt.ORTQuantizer.from_pretrained(folder).quantize(save_dir=folder, quantization_config=qconfig)
    return str(folder), name


def cold_start(kind: str, bundle: Path, model: str, task: str, text: Any) -> dict[str, float]:
    """Process start -> first answer, and the process's peak RSS, in a fresh interpreter."""
    scripts = {
        "runtime": f"from xlmr_serverless.runtime import load\np = load({str(bundle)!r}, verify=False)\np({text!r})",
        "lambda_handler": ("import json\nfrom xlmr_serverless.aws_lambda.handler import handler\n"
                           "from xlmr_serverless.aws_lambda.local import LocalContext, sample_event\n"
                           f"r = handler(sample_event({str(bundle)!r}, 'hello'), LocalContext())\n"
                           "assert r['statusCode'] == 200, r"),
        "transformers_pipeline": (f"from transformers import pipeline\n"
                                  f"p = pipeline({task!r}, model={model!r})\np({text!r})"),
    }
    code = scripts[kind] + ("\nimport sys\nfrom benchmarks.worker import peak_rss_mb\n"
                            "sys.stderr.write('PEAK %f\\n' % peak_rss_mb())")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "BUNDLE_DIR": str(bundle), "POWERTOOLS_METRICS_NAMESPACE": "bench"}
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t0
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}
    peak = float(next(l.split()[1] for l in res.stderr.splitlines() if l.startswith("PEAK")))
    return {"seconds": elapsed, "peak_rss_mb": peak}


def accuracy(ref: np.ndarray, got: np.ndarray, task: str) -> dict[str, float]:
    if ref.shape != got.shape:
        return {"error": f"shape {got.shape} != reference {ref.shape}"}
    out = {"max_abs_diff": float(np.abs(ref - got).max())}
    if task == "feature-extraction":  # argmax over hidden units means nothing: compare sentences
        a, b = ref.mean(1), got.mean(1)
        cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
        out["cosine_min"] = float(cos.min())
        out["cosine_mean"] = float(cos.mean())
    else:
        out["top1_agreement"] = float((ref.argmax(-1) == got.argmax(-1)).mean())
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from xlmr_serverless.export.build import ExportOptions, build_bundle
    from xlmr_serverless.runtime.manifest import read_manifest
    from xlmr_serverless.runtime.tokenization import TextTokenizer, special_ids

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="xlmr-bench-"))  # scratch: never inside the results
    batch_sizes = [int(x) for x in str(args.batch_sizes).split(",")]
    seq_lens = [int(x) for x in str(args.seq_lens).split(",")]
    providers = [p.strip() for p in str(args.providers).split(",")]
    threads = int(getattr(args, "threads", 0) or len(os.sched_getaffinity(0)))
    info = machine()
    precisions = ("fp32", "int8") + (("fp16",) if "cuda" in providers else ())
    bundle = work / "bundle"
    sys.stderr.write("exporting the bundle ...\n")
    build_bundle(args.model, args.task, bundle, ExportOptions(
        precisions=precisions, min_agreement=float(getattr(args, "min_agreement", 0.0))),
        log=lambda s: None)
    manifest = read_manifest(bundle)
    tok = TextTokenizer(bundle / "tokenizer.json")
    specials = special_ids(tok, manifest.special_tokens)
    cases = write_cases(bundle, tok, specials, batch_sizes,
                        [min(s, manifest.max_length) for s in seq_lens], args.task, work / "cases")
    base = {"cases": cases, "mask_id": specials.get("mask"), "threads": threads,
            "model": str(args.model), "task": args.task}
    specs: dict[str, dict[str, Any]] = {"pytorch_fp32": {**base, "kind": "torch"}}
    sys.stderr.write("exporting Optimum's contenders ...\n")
    opt_dir, qname = export_optimum(str(args.model), args.task, work / "optimum", info.get("isa", []))
    missing = {}
    if opt_dir:
        specs["optimum_fp32"] = {**base, "kind": "optimum", "onnx_dir": opt_dir, "file": "model.onnx"}
        specs[f"optimum_int8_{qname}"] = {**base, "kind": "optimum", "onnx_dir": opt_dir,
                                           "file": "model_quantized.onnx"}
    else:
        missing["optimum"] = qname
    for p in precisions:
        provider = "cuda" if p == "fp16" else "cpu"
        if provider in providers:
            specs[f"bundle_{p}"] = {**base, "kind": "bundle", "bundle": str(bundle),
                                    "precision": p, "provider": provider}
            if provider == "cuda":  # does IO binding pay on this GPU? the same file without it
                specs[f"bundle_{p}_no_iobinding"] = {**specs[f"bundle_{p}"], "io_binding": False}
    workers = {name: Worker(name, spec) for name, spec in specs.items()}
    try:
        lat: dict[str, dict[str, list[float]]] = {n: {c["name"]: [] for c in cases} for n in workers}
        total, done = args.rounds * len(cases) * len(workers), 0
        for _ in range(args.rounds):
            for case in cases:
                iters = max(1, min(20, 2048 // (case["batch"] * case["seq"])))
                for name, w in workers.items():
                    lat[name][case["name"]] += w.ask(op="run", case=case["name"], iters=iters)["ms"]
                    done += 1
                    progress(done, total, f"{name} {case['name']}")
                    time.sleep(PAUSE_S)
        acc_case = cases[len(cases) // 2]["name"]
        outs = {n: np.load(w.ask(op="output", case=acc_case, path=str(work / f"{n}.npy"))["path"])
                for n, w in workers.items()}
        results = {n: {"load_s": w.load_s, "file_mb": file_size(specs[n]) / 1e6,
                       "peak_rss_mb": w.ask(op="rss")["peak_rss_mb"],
                       "latency_ms": {c: report.percentiles(v) for c, v in lat[n].items()},
                       "accuracy_vs_pytorch_fp32": accuracy(outs["pytorch_fp32"], outs[n], args.task)}
                   for n, w in workers.items()}
    finally:
        for w in workers.values():
            w.close()
    text = {"fill-mask": "Paris is the <mask> of France.", "question-answering": None}.get(
        args.task, "XLM-R runs on AWS Lambda.")
    sys.stderr.write("cold starts ...\n")
    colds = {k: cold_start(k, bundle, str(args.model), args.task, text)
             for k in ("runtime", "lambda_handler", "transformers_pipeline")
             if text is not None or k == "lambda_handler"}
    config = json.loads((Path(args.model) / "config.json").read_text()) \
        if (Path(args.model) / "config.json").exists() else None
    result = {"model": str(args.model), "task": args.task, "machine": info, "threads": threads,
              "rounds": args.rounds, "cases": [{k: c[k] for k in ("name", "batch", "seq")} for c in cases],
              "accuracy_case": acc_case, "contenders": results, "missing": missing,
              "cold_start": colds, "ceiling": ceiling.gemm_ceiling(threads=threads),
              "encoder_config": {k: config[k] for k in ("hidden_size", "intermediate_size",
                                                         "num_hidden_layers")} if config else None}
    report.write(result, out)
    shutil.rmtree(work, ignore_errors=True)
    return result


def main(args: argparse.Namespace) -> None:
    result = run(args)
    print(report.summary(result))
