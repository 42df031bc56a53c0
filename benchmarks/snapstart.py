"""SnapStart the way Lambda runs it, as far as one machine can: the image's layout and
allocator, awslambdaric in snap-start mode on the emulated Runtime API (benchmarks/
runtime_api.py), pinned to N vCPUs. At /runtime/restore/next (the moment Lambda would take the
snapshot) the process's resident memory is read from /proc: its RSS, anonymous pages and file
pages (mapped weights, libraries): the snapshot's weight. Then the requests: the first after
the restore, and warm ones after it, each timed from the previous answer (the restore, or the
request before) to its own, so both carry the same Runtime API round trip. Each bundle runs
with the warm-up (XLMR_WARM_UP's default) and without it, and as a plain cold start (no
SnapStart), each in its own process, rounds alternating; the ISA named.

What this cannot show: Lambda's restore itself (the snapshot's pages fetched from its cache
on first touch), which only AWS can measure; the process here keeps its memory.

    python -m benchmarks.snapstart BUNDLE[@PRECISION] ... [--rounds 3] [--cpus 2] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.lambda_cold_start import one_start, sample_request
from tests.image_layout import ROOT, image_env, layout, verifies_at_build, verify_at_build
from tests.runtime_api import RuntimeApi
from xlmr_serverless.runtime.cpu import cpu_model, isa

WARM_REQUESTS = 10
MODES = {"warm-up": {}, "no warm-up": {"XLMR_WARM_UP": "none"}}


def proc_memory_mb(pid: int) -> dict[str, float]:
    """RSS, anonymous and file-backed resident pages of process `pid` (MB)."""
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: int(text.split(f"{f}:")[1].split()[0]) / 1024
            for k, f in {"rss": "VmRSS", "anon": "RssAnon", "file": "RssFile"}.items()}


def one_restore(python: Path, task: Path, bundle: Path, cpus: int, event: dict[str, Any],
                extra_env: dict[str, str]) -> dict[str, Any]:
    """One SnapStart lifecycle in a new process: memory at the snapshot, the first response
    after the restore and warm responses (ms), the hook's own log."""
    events = [dict(event, _id=f"r{i}") for i in range(WARM_REQUESTS + 1)]
    api = RuntimeApi(events)
    sandbox_tmp = Path(tempfile.mkdtemp(prefix="xlmr-sandbox-"))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(task),
           "AWS_LAMBDA_RUNTIME_API": api.address, "XLMR_BUNDLE_DIR": str(bundle),
           "AWS_LAMBDA_FUNCTION_NAME": "xlmr", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3008",
           "POWERTOOLS_METRICS_NAMESPACE": "bench", "TMPDIR": str(sandbox_tmp),
           "HOME": str(sandbox_tmp), "TOKENIZERS_PARALLELISM": "false",
           "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start", **extra_env}
    pin = ["taskset", "-c", ",".join(map(str, sorted(os.sched_getaffinity(0))[:cpus]))]
    t0 = time.perf_counter()
    proc = subprocess.Popen([*pin, str(python), "-m", "awslambdaric",
                             "xlmr_serverless.aws_lambda.handler.handler"],
                            env=env, cwd=task, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    at_snapshot: dict[str, float] = {}
    api.on_snapshot = lambda: at_snapshot.update(proc_memory_mb(proc.pid))
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and \
                len(api.responses) < len(events):
            time.sleep(0.05)
    finally:
        proc.kill()
        out = proc.stdout.read() if proc.stdout else ""
        proc.wait()
        api.close()
        shutil.rmtree(sandbox_tmp, ignore_errors=True)
    ok = all(api.responses.get(e["_id"], {}).get("statusCode") == 200 for e in events)
    if not ok or api.restored_at is None:
        tail = out.strip().splitlines()[-1:] or ["no output"]
        return {"error": str(api.errors[0] if api.errors else tail[0])[:300]}
    times = [api.restored_at] + [api.answered_at[e["_id"]] for e in events]
    gaps = np.diff(times) * 1000
    logs = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    ready: dict[str, Any] = next((x for x in logs if x.get("message") == "snapshot ready"), {})
    return {"init_seconds": api.restored_at - t0, "at_snapshot_mb": at_snapshot,
            "first_after_restore_ms": float(gaps[0]), "warm_ms": float(np.median(gaps[1:])),
            "hook_memory_mb": ready.get("memory_mb"), "warm_up_ms": ready.get("warm_up_ms")}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="+", help="bundle folders; @int4 picks that precision's file")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="folder for results.json")
    a = ap.parse_args(argv)
    python, task = layout(ROOT)
    env = image_env(ROOT)
    bundles = {name: (Path(name.split("@")[0]).resolve(),
                      {"XLMR_PRECISION": name.split("@")[1]} if "@" in name else {})
               for name in a.bundles}
    if verifies_at_build(ROOT):
        for b in {b for b, _ in bundles.values()}:
            verify_at_build(python, task, b)
    events = {name: sample_request(b) for name, (b, _) in bundles.items()}
    runs: dict[str, list[dict[str, Any]]] = {}
    for _ in range(a.rounds):
        for name, (b, chosen) in bundles.items():
            label = Path(name).name
            for mode, extra in MODES.items():
                runs.setdefault(f"{label}|{mode}", []).append(one_restore(
                    python, task, b, a.cpus, events[name], {**env, **chosen, **extra}))
            runs.setdefault(f"{label}|no SnapStart", []).append(
                one_start(python, task, b, a.cpus, events[name], {**env, **chosen}))
    print(f"ISA {isa()} ({cpu_model()}); {a.cpus} vCPUs; {a.rounds} alternating rounds; "
          "awslambdaric in the image's layout; medians\n")
    print("| bundle | mode | first response after restore | warm request | ratio | "
          "RSS at snapshot | anon | file | init (publish) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for key, rs in runs.items():
        name, mode = key.split("|")
        ok = [r for r in rs if "error" not in r]
        if not ok:
            print(f"| {name} | {mode} | error: {rs[-1]['error']} |||||||")
        elif mode == "no SnapStart":
            print(f"| {name} | {mode} | cold start: {np.median([r['seconds'] for r in ok]):.3f} s"
                  f" to the first response | | | peak {np.median([r['peak_rss_mb'] for r in ok]):.0f}"
                  " MB | | | |")
        else:
            med = {k: float(np.median([r[k] for r in ok])) for k in
                   ("first_after_restore_ms", "warm_ms", "init_seconds")}
            mem = {k: float(np.median([r["at_snapshot_mb"][k] for r in ok]))
                   for k in ("rss", "anon", "file")}
            print(f"| {name} | {mode} | {med['first_after_restore_ms']:.1f} ms | "
                  f"{med['warm_ms']:.1f} ms | {med['first_after_restore_ms'] / med['warm_ms']:.1f}x"
                  f" | {mem['rss']:.0f} MB | {mem['anon']:.0f} MB | {mem['file']:.0f} MB | "
                  f"{med['init_seconds']:.2f} s |")
    result = {"isa": isa(), "cpu": cpu_model(), "cpus": a.cpus, "rounds": runs}
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "results.json").write_text(json.dumps(result, indent=1))
    else:
        print("\n" + json.dumps(result))


if __name__ == "__main__":
    main()
