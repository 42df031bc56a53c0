"""Cold start the way Lambda runs it: the image's file layout (tests/image_layout.py:
compiled bytecode, the bundle verified at build), the runtime interface client
(`python -m awslambdaric xlmr_serverless.aws_lambda.handler.handler`, the image's CMD) on an
emulated Runtime API, a fresh empty /tmp for every start (a new sandbox), pinned to one vCPU
(what a function of up to 1,769 MB gets) and to two, with the environment the image sets
(its allocator, benchmarks/image_layout.image_env). Timed from process start to the first
response posted back (not to the process's exit); peak RSS of the process; the handler's own
phases from its first log line. Each checkout, bundle and CPU count in its own process,
rounds alternating; the ISA named.

    python -m benchmarks.lambda_cold_start BUNDLE [BUNDLE ...] [--rounds 3]
        [--code before=/path/to/other/checkout]   # compare code, same bundles, same run
        [--env glibc=LD_PRELOAD=]                 # this code, its environment changed, beside it
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

from benchmarks.phases import handler_phases
from tests.image_layout import ROOT, image_env, layout, verifies_at_build, verify_at_build
from tests.runtime_api import RuntimeApi
from xlmr_serverless.runtime.cpu import cpu_model, isa


def sample_request(bundle: Path) -> dict[str, Any]:
    """An API Gateway (REST) event asking the bundle's task for an answer."""
    from xlmr_serverless.aws_lambda.local import sample_event

    return sample_event(str(bundle), "hello")


def one_start(python: Path, task: Path, bundle: Path, cpus: int,
              event: dict[str, Any], extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """One cold start in a new process and a new /tmp; seconds to the first response, to the
    end of init (the client's first poll), peak RSS, the handler's phases."""
    api = RuntimeApi([dict(event, _id="first")])
    sandbox_tmp = Path(tempfile.mkdtemp(prefix="xlmr-sandbox-"))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(task),
           "AWS_LAMBDA_RUNTIME_API": api.address, "BUNDLE_DIR": str(bundle), "XLMR_BUNDLE_DIR": str(bundle),
           "AWS_LAMBDA_FUNCTION_NAME": "xlmr", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3008",
           "POWERTOOLS_METRICS_NAMESPACE": "bench", "TMPDIR": str(sandbox_tmp),
           "HOME": str(sandbox_tmp), "TOKENIZERS_PARALLELISM": "false", **(extra_env or {})}
    pin = ["taskset", "-c", ",".join(map(str, sorted(os.sched_getaffinity(0))[:cpus]))]
    t0 = time.perf_counter()
    proc = subprocess.Popen([*pin, str(python), "-m", "awslambdaric",
                             "xlmr_serverless.aws_lambda.handler.handler"],
                            env=env, cwd=task, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # cwd: the image's WORKDIR, /var/task
    try:
        api.answered.wait(120)
    finally:
        proc.kill()
        out = proc.stdout.read() if proc.stdout else ""  # log lines are flushed one by one
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own peak RSS
        proc.returncode = os.waitstatus_to_exitcode(status)
        api.close()
        shutil.rmtree(sandbox_tmp, ignore_errors=True)
    peak_kb = usage.ru_maxrss
    if "first" not in api.answered_at or api.responses["first"].get("statusCode") != 200:
        tail = out.strip().splitlines()[-1:] or ["no output"]
        return {"error": str(api.errors[0] if api.errors else tail[0])[:300]}
    init = (api.first_poll or t0) - t0
    return {"seconds": api.answered_at["first"] - t0, "init_seconds": init,
            "peak_rss_mb": peak_kb / 1024 if peak_kb else None, **handler_phases(out)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cpus", default="1,2", help="CPU counts to pin to (default 1,2)")
    ap.add_argument("--code", action="append", default=[],
                    help="NAME=CHECKOUT: another checkout's code to run beside this one's")
    ap.add_argument("--env", action="append", default=[],
                    help="NAME=KEY=VALUE[,KEY=VALUE]: this code with more environment "
                         "(an allocator, a thread setting) run beside it")
    a = ap.parse_args(argv)
    codes = {"this": ROOT, **{c.split("=", 1)[0]: Path(c.split("=", 1)[1]) for c in a.code}}
    cpus = [int(c) for c in a.cpus.split(",")]
    layouts = {name: layout(src) for name, src in codes.items()}
    envs = {name: image_env(src) for name, src in codes.items()}  # each image's allocator
    for e in a.env:
        name, pairs = e.split("=", 1)
        envs[name] = {**envs["this"], **dict(kv.split("=", 1) for kv in pairs.split(","))}
        layouts[name] = layouts["this"]
    for name, (python, task) in layouts.items():
        if name in codes and verifies_at_build(codes[name]):  # as that checkout's image does
            for b in a.bundles:
                verify_at_build(python, task, b.resolve())
    events = {b: sample_request(b) for b in a.bundles}
    runs: dict[tuple[str, Path, int], list[dict[str, Any]]] = {}
    for _ in range(a.rounds):
        for name, (python, task) in layouts.items():
            for b in a.bundles:
                for c in cpus:
                    runs.setdefault((name, b, c), []).append(
                        one_start(python, task, b.resolve(), c, events[b], envs[name]))
    print(f"ISA {isa()} ({cpu_model()}); {a.rounds} alternating rounds; awslambdaric in the "
          f"image's layout, a fresh /tmp per start; median of the rounds, and the fastest (what\n"
          "a shared machine's noise, which only ever adds, leaves of a start)\n")
    print("| code | bundle | vCPUs | first response | fastest | init (first poll) | peak RSS | "
          "phases (last round, ms) |\n|---|---|---:|---:|---:|---:|---:|---|")
    for (name, b, c), rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            print(f"| {name} | {b.name} | {c} | error: {rs[-1]['error']} |||||")
            continue
        phases = ", ".join(f"{k} {v:.0f}" for k, v in ok[-1].get("phases", {}).items())
        peaks = [r["peak_rss_mb"] for r in ok if r["peak_rss_mb"]]
        seconds = [r["seconds"] for r in ok]
        print(f"| {name} | {b.name} | {c} | {np.median(seconds):.3f} s | {min(seconds):.3f} s | "
              f"{np.median([r['init_seconds'] for r in ok]):.3f} s | "
              f"{np.median(peaks) if peaks else float('nan'):.0f} MB | {phases} |")
    print("\n" + json.dumps({f"{n}|{b.name}|{c}": rs for (n, b, c), rs in runs.items()}))


if __name__ == "__main__":
    main()
