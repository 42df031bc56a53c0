"""`xlmr bench`: the bundle against PyTorch + transformers and Optimum, in one run. Each
contender lives in its own process and is asked in turn, round after round (A B C A B C ...),
with a short pause between contenders, so the machine's drift hits all alike."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from xlmr_serverless.runtime import precisions as registry
from xlmr_serverless.runtime.cpu import cpu_flags, cpu_model, isa

from . import ceiling, report
from .contenders import file_size
from .inputs import HELD_OUT, write_cases, write_held_out
from .phases import handler_phases

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


RESULTS = Path(__file__).resolve().parent / "results"
# the registry's precisions `xlmr bench` times where their provider is asked for (int4: its
# speed is the size table's, benchmarks/sizes.py)
BENCHMARKED = ("int8", "fp32", "fp16")


def machine_folder() -> str:
    """benchmarks/results/<this>: the ISA and the CPU's family, e.g. 'avx2-epyc',
    'avx512_vnni-xeon-platinum-8375c': figures from different folders are never compared."""
    words = [w for w in re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*|amd|intel", " ",
                                  cpu_model().lower()).split() if w]
    return "-".join([isa(), *words[:3]]) or isa()


def check_same_machine(folder: Path) -> None:
    """Refuse to write over results recorded on another ISA (a folder per machine)."""
    old = folder / "results.json"
    if old.is_file():
        recorded = json.loads(old.read_text()).get("machine", {}).get("isa_level")
        if recorded and recorded != isa():
            raise SystemExit(f"{folder} holds results recorded on {recorded}; this CPU is "
                             f"{isa()}: write them to benchmarks/results/{machine_folder()}/")


def record(folder: str, name: str, result: dict[str, Any]) -> None:
    """A check's result as `folder/name` (JSON), where --output asked for it ('' : nowhere)."""
    if folder:
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(json.dumps(result, indent=1) + "\n")


def machine() -> dict[str, Any]:
    """This machine, as every result names it (runtime/cpu.py reads the CPU)."""
    flags = cpu_flags()
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "processor": platform.processor(), "isa_level": isa(),
            "folder": machine_folder(), "cpu_model": cpu_model(),
            "isa": [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
                    if f in flags]}


def export_optimum(model: str, task: str, folder: Path, isa: list[str]) -> tuple[str | None, str]:
    """Optimum's own export and int8 (ORTQuantizer, the config that fits this CPU)."""
    try:
        import optimum.onnxruntime as opt
        from optimum.onnxruntime.configuration import AutoQuantizationConfig
    except ImportError as exc:
        return None, f"optimum-onnx not installed ({exc.name})"
    from xlmr_serverless.runtime.tasks import task_spec

    optimum_class = task_spec(task).optimum_class
    if optimum_class is None:
        return None, f"Optimum has no ORTModel for {task}"
    m = getattr(opt, optimum_class).from_pretrained(model, export=True)
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


def cold_start(kind: str, bundle: Path, model: str, task: str, text: Any) -> dict[str, Any]:
    """Process start -> first answer, and the process's peak RSS, in a fresh interpreter."""
    scripts = {
        "runtime": (f"from xlmr_serverless.runtime import load\n"
                    f"p = load({str(bundle)!r}, verify=False)\np({text!r})"),
        "lambda_handler": ("import json\nfrom xlmr_serverless.aws_lambda.handler import handler\n"
                           "from xlmr_serverless.aws_lambda.local import LocalContext, sample_event\n"
                           f"r = handler(sample_event({str(bundle)!r}, 'hello'), LocalContext())\n"
                           "assert r['statusCode'] == 200, r"),
        "transformers_pipeline": (f"from transformers import pipeline\n"
                                  f"p = pipeline({task!r}, model={model!r})\np({text!r})"),
    }
    scripts["lambda_handler_1vcpu"] = scripts["lambda_handler"]
    # the answer's time on the monotonic clock every process shares (perf_counter on Linux):
    # a cold start ends at the first answer, not at the process's exit
    code = scripts[kind] + ("\nimport sys, time\nANSWERED = time.perf_counter()\n"
                            "from benchmarks.worker import peak_rss_mb\n"
                            "sys.stderr.write('PEAK %f\\nANSWERED %.6f\\n' % (peak_rss_mb(), ANSWERED))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "XLMR_BUNDLE_DIR": str(bundle), "POWERTOOLS_METRICS_NAMESPACE": "bench"}
    # Lambda gives a ~1,769 MB function one vCPU: the same cold start pinned to one core
    pin = ["taskset", "-c", str(min(os.sched_getaffinity(0)))] \
        if kind.endswith("_1vcpu") and shutil.which("taskset") else []
    if kind.endswith("_1vcpu") and not pin:
        return {"error": "taskset not found"}
    t0 = time.perf_counter()
    res = subprocess.run([*pin, sys.executable, "-c", code], capture_output=True, text=True,
                         env=env)
    elapsed = time.perf_counter() - t0
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}
    lines = dict(ln.split()[:2] for ln in res.stderr.splitlines()
                 if ln.startswith(("PEAK ", "ANSWERED ")))
    return {"seconds": float(lines["ANSWERED"]) - t0, "with_exit_seconds": elapsed,
            "peak_rss_mb": float(lines["PEAK"]), **handler_phases(res.stdout)}


def accuracy(ref: np.ndarray, got: np.ndarray, task: str, mask: np.ndarray) -> dict[str, Any]:
    """A contender's outputs on the held-out text against PyTorch fp32's: sentence cosine
    (mean-pooled over real tokens; min, mean, share >= 0.99) or top-1 agreement."""
    if ref.shape != got.shape:
        return {"error": f"shape {got.shape} != reference {ref.shape}"}
    real = mask.astype(bool) if task in ("feature-extraction", "token-classification") else \
        np.ones(ref.shape[:-1], bool)
    out: dict[str, Any] = {"max_abs_diff": float(np.abs(ref - got)[real].max()),
                           "rows": int(len(ref))}
    if task == "feature-extraction":  # argmax over hidden units means nothing: compare sentences
        w = mask[..., None].astype(np.float32)
        a, b = (ref * w).sum(1) / w.sum(1), (got * w).sum(1) / w.sum(1)
        cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
        out["cosine_min"] = float(cos.min())
        out["cosine_mean"] = float(cos.mean())
        out["share_ge_0.99"] = float((cos >= 0.99).mean())
    else:
        out["top1_agreement"] = float((ref.argmax(-1) == got.argmax(-1))[real].mean())
    return out


@dataclasses.dataclass
class Plan:
    """What one `xlmr bench` run measures, read from its arguments."""

    model: str
    task: str
    batch_sizes: list[int]
    seq_lens: list[int]
    providers: list[str]
    threads: int
    rounds: int
    min_agreement: float
    output: Path

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Plan:
        return cls(model=str(args.model), task=args.task,
                   batch_sizes=[int(x) for x in str(args.batch_sizes).split(",")],
                   seq_lens=[int(x) for x in str(args.seq_lens).split(",")],
                   providers=[p.strip() for p in str(args.providers).split(",")],
                   threads=int(getattr(args, "threads", 0) or len(os.sched_getaffinity(0))),
                   rounds=int(args.rounds),
                   min_agreement=float(getattr(args, "min_agreement", 0.0)),
                   output=Path(args.output) if getattr(args, "output", None) else
                   RESULTS / machine_folder() / f"{Path(str(args.model)).name}-{args.task}")

    @property
    def precisions(self) -> tuple[str, ...]:
        """The registry's benchmarked precisions whose provider this run times."""
        return tuple(p.name for p in sorted(registry.REGISTRY.values(), key=lambda p: p.cpu_rank,
                                            reverse=True)
                     if p.name in BENCHMARKED and p.provider in self.providers)


def export_bundle(plan: Plan, work: Path) -> tuple[Path, list[dict[str, Any]], dict[str, int]]:
    """The bundle (fp32, int8, fp16 for CUDA) and the benchmark cases cut from real text."""
    from xlmr_serverless.export.build import ExportOptions, build_bundle
    from xlmr_serverless.runtime.manifest import read_manifest
    from xlmr_serverless.runtime.tokenization import TextTokenizer, special_ids

    bundle = work / "bundle"
    sys.stderr.write("exporting the bundle ...\n")
    build_bundle(plan.model, plan.task, bundle, ExportOptions(
        precisions=plan.precisions, min_agreement=plan.min_agreement), log=lambda s: None)
    manifest = read_manifest(bundle)
    tok = TextTokenizer(bundle / "tokenizer.json")
    specials = special_ids(manifest.special_tokens)
    cases = write_cases(bundle, tok, specials, plan.batch_sizes,
                        [min(s, manifest.max_length) for s in plan.seq_lens], plan.task,
                        work / "cases")
    held_out = write_held_out(tok, specials, plan.task, manifest.max_length, work / "cases")
    return bundle, cases + [held_out], specials


def export_record(bundle: Path) -> dict[str, Any]:
    """What the export decided, from the bundle's manifest: each file's recipe and fusions,
    the gate's figures per recipe tried, the fusion timings, the ISA it was tuned on."""
    m = json.loads((bundle / "manifest.json").read_text())
    return {"files": [{**{k: f.get(k) for k in ("path", "precision", "recipe", "optimized")},
                       "size": f["size"] + sum(e["size"] for e in f.get("external_data", []))}
                      for f in m["files"]],
            "parity": m.get("parity", {}), "tuned_on": m.get("tuned_on")}


def contender_specs(plan: Plan, bundle: Path, cases: list[dict[str, Any]],
                    specials: dict[str, int], work: Path,
                    isa: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """name -> worker spec for PyTorch, Optimum (fp32 and its int8) and the bundle's files;
    and the contenders that could not run, with why."""
    base = {"cases": cases, "mask_id": specials.get("mask"), "threads": plan.threads,
            "model": plan.model, "task": plan.task}
    specs: dict[str, dict[str, Any]] = {"pytorch_fp32": {**base, "kind": "torch"}}
    sys.stderr.write("exporting Optimum's contenders ...\n")
    opt_dir, qname = export_optimum(plan.model, plan.task, work / "optimum", isa)
    missing = {}
    if opt_dir:
        specs["optimum_fp32"] = {**base, "kind": "optimum", "onnx_dir": opt_dir, "file": "model.onnx"}
        specs[f"optimum_int8_{qname}"] = {**base, "kind": "optimum", "onnx_dir": opt_dir,
                                           "file": "model_quantized.onnx"}
    else:
        missing["optimum"] = qname
    for p in plan.precisions:
        provider = registry.get(p).provider
        if provider in plan.providers:
            specs[f"bundle_{p}"] = {**base, "kind": "bundle", "bundle": str(bundle),
                                    "precision": p, "provider": provider}
            if provider == "cuda":  # does IO binding pay on this GPU? the same file without it
                specs[f"bundle_{p}_no_iobinding"] = {**specs[f"bundle_{p}"], "io_binding": False}
    return specs, missing


def alternate_rounds(rounds: int, workers: dict[str, Worker],
                     cases: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Latencies (ms) per contender and case: A B C A B C ..., a pause between contenders."""
    lat: dict[str, dict[str, list[float]]] = {n: {c["name"]: [] for c in cases} for n in workers}
    total, done = rounds * len(cases) * len(workers), 0
    for _ in range(rounds):
        for case in cases:
            iters = max(1, min(20, 2048 // (case["batch"] * case["seq"])))
            for name, w in workers.items():
                lat[name][case["name"]] += w.ask(op="run", case=case["name"], iters=iters)["ms"]
                done += 1
                progress(done, total, f"{name} {case['name']}")
                time.sleep(PAUSE_S)
    return lat


def measure(plan: Plan, specs: dict[str, dict[str, Any]], cases: list[dict[str, Any]],
            work: Path) -> tuple[dict[str, Any], str]:
    """Each contender's latencies, load time, size, peak RSS and accuracy against PyTorch."""
    workers = {name: Worker(name, spec) for name, spec in specs.items()}
    try:
        lat = alternate_rounds(plan.rounds, workers, [c for c in cases if c["name"] != HELD_OUT])
        acc_case = HELD_OUT
        outs = {n: np.load(w.ask(op="output", case=acc_case, path=str(work / f"{n}.npy"))["path"])
                for n, w in workers.items()}
        held = next(c for c in specs["pytorch_fp32"]["cases"] if c["name"] == HELD_OUT)
        mask = np.load(held["mask"])
        results = {n: {"load_s": w.load_s, "file_mb": file_size(specs[n]) / 1e6,
                       "peak_rss_mb": w.ask(op="rss")["peak_rss_mb"],
                       "latency_ms": {c: report.percentiles(v) for c, v in lat[n].items()},
                       "accuracy_vs_pytorch_fp32": accuracy(outs["pytorch_fp32"], outs[n], plan.task,
                                                             mask)}
                   for n, w in workers.items()}
    finally:
        for w in workers.values():
            w.close()
    return results, acc_case


def cold_starts(plan: Plan, bundle: Path) -> dict[str, Any]:
    text = {"fill-mask": "Paris is the <mask> of France.", "question-answering": None}.get(
        plan.task, "XLM-R runs on AWS Lambda.")
    sys.stderr.write("cold starts ...\n")
    return {k: cold_start(k, bundle, plan.model, plan.task, text)
            for k in ("runtime", "lambda_handler", "lambda_handler_1vcpu",
                      "transformers_pipeline")
            if text is not None or k == "lambda_handler"}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Export, measure every contender in alternating rounds, cold starts, write the report."""
    plan = Plan.from_args(args)
    check_same_machine(plan.output)
    plan.output.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="xlmr-bench-"))  # scratch: never inside the results
    info = machine()
    bundle, cases, specials = export_bundle(plan, work)
    specs, missing = contender_specs(plan, bundle, cases, specials, work, info.get("isa", []))
    results, acc_case = measure(plan, specs, cases, work)
    config_path = Path(plan.model) / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else None
    result = {"model": plan.model, "task": plan.task, "machine": info, "threads": plan.threads,
              "rounds": plan.rounds,
              "cases": [{k: c[k] for k in ("name", "batch", "seq")} for c in cases
                        if c["name"] != HELD_OUT],
              "held_out": {"text": "benchmarks/texts/accuracy.txt",
                           "rows": next(c["batch"] for c in cases if c["name"] == HELD_OUT)},
              "accuracy_case": acc_case, "contenders": results, "missing": missing,
              "cold_start": cold_starts(plan, bundle),
              "bundle_export": export_record(bundle),
              "ceiling": ceiling.gemm_ceiling(threads=plan.threads),
              "encoder_config": {k: config[k] for k in ("hidden_size", "intermediate_size",
                                                         "num_hidden_layers")} if config else None}
    report.write(result, plan.output)
    shutil.rmtree(work, ignore_errors=True)
    return result


def main(args: argparse.Namespace) -> None:
    result = run(args)
    print(report.summary(result))
