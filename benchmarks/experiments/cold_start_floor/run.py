"""How much of a cold start is this project's code, and how much the libraries' own work that
any handler built on them pays: the handler's cold start (benchmarks/lambda_cold_start.py:
awslambdaric, the image's layout and environment) beside the same steps done with no code of
ours but the session's build (floor_child.py beside this file: the runtime client's import, numpy,
onnxruntime, tokenizers, Powertools' imports, the tokenizer's build, the session's build
beside it, one run), built up a step at a time. Each variant its own process, pinned to 1
and 2 vCPUs, rounds alternating; timed from process start to the first answer (the
handler's posted response, the floor's "ready"), and peak RSS. The floor bounds what any
change to our code can win on this machine.

    python -m benchmarks.experiments.cold_start_floor.run BUNDLE [BUNDLE ...] [--rounds 9] [--cpus 1,2]
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
from tests.image_layout import ROOT, image_env, layout, verify_at_build
from xlmr_serverless.aws_lambda.config import SAFE_ENVIRONMENT
from xlmr_serverless.runtime.cpu import cpu_model, isa

CHILD = Path(__file__).with_name("floor_child.py")
# the floor built up a step at a time: each variant adds steps to the one before
VARIANTS: dict[str, tuple[str, ...]] = {
    "python": (),
    "client": ("client",),
    "imports": ("client", "libraries", "powertools"),
    "loads": ("client", "libraries", "session", "tokenizer", "run"),
    "floor": ("client", "libraries", "session", "tokenizer", "powertools", "run"),
}


def request_text(event: dict[str, Any]) -> str:
    """The text the handler's sample request sends (the floor encodes the same)."""
    inputs = json.loads(event["body"])["inputs"]
    return inputs[0] if isinstance(inputs, list) else str(inputs)


def cpu_model_file(bundle: Path) -> str:
    """The bundle's CPU model file, as its manifest names it."""
    files = json.loads((bundle / "manifest.json").read_text())["files"]
    return next(f["path"] for f in files if f.get("provider", "cpu") == "cpu")


def one_floor(python: Path, task: Path, bundle: Path, cpus: int, text: str,
              steps: tuple[str, ...], env: dict[str, str]) -> dict[str, float]:
    """Seconds from process start to the floor child's "ready", pinned to `cpus`, in the
    environment the handler gives itself (aws_lambda/config.py) and a new /tmp; and the
    child's peak RSS."""
    pin = ["taskset", "-c", ",".join(map(str, sorted(os.sched_getaffinity(0))[:cpus]))]
    sandbox_tmp = tempfile.mkdtemp(prefix="xlmr-sandbox-")
    child_env = {**SAFE_ENVIRONMENT, **dict.fromkeys(
                     [k for k, v in SAFE_ENVIRONMENT.items() if v == "/tmp"] + ["TMPDIR"],
                     sandbox_tmp),
                 "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(task), **env}
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen([*pin, str(python), "-c", CHILD.read_text(), str(bundle),
                                 cpu_model_file(bundle), text, ",".join(steps)],
                                env=child_env, cwd=task, stdout=subprocess.PIPE, text=True)
        line = proc.stdout.readline() if proc.stdout else ""
        seconds = time.perf_counter() - t0
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own peak RSS
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        shutil.rmtree(sandbox_tmp, ignore_errors=True)
    if line.strip() != "ready":
        raise RuntimeError(f"floor {steps} on {bundle.name} exited {proc.returncode}")
    return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--cpus", default="1,2", help="CPU counts to pin to (default 1,2)")
    a = ap.parse_args(argv)
    cpus = [int(c) for c in a.cpus.split(",")]
    python, task = layout(ROOT)
    env = image_env(ROOT)
    bundles = [b.resolve() for b in a.bundles]
    for b in bundles:
        verify_at_build(python, task, b)  # as the image does: no cold start hashes the files
    events = {b: sample_request(b) for b in bundles}
    runs: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for _ in range(a.rounds):
        for b in bundles:
            for c in cpus:
                for name, steps in VARIANTS.items():
                    runs.setdefault((b.name, c, name), []).append(
                        one_floor(python, task, b, c, request_text(events[b]), steps, env))
                start = one_start(python, task, b, c, events[b], env)
                if "error" in start:
                    raise RuntimeError(f"handler on {b.name}: {start['error']}")
                runs.setdefault((b.name, c, "handler"), []).append(start)
    names = [*VARIANTS, "handler"]
    print(f"ISA {isa()} ({cpu_model()}); {a.rounds} alternating rounds, each a new process in "
          "the image's layout and environment; seconds to the first answer, median (fastest); "
          "peak RSS, median\n")
    print("| bundle | vCPUs | " + " | ".join(names) + " | handler - floor | peak RSS floor / "
          "handler |\n|---|---:|" + "---:|" * (len(names) + 2))
    for b in bundles:
        for c in cpus:
            cells = [[r["seconds"] for r in runs[(b.name, c, n)]] for n in names]
            gap = np.median(cells[-1]) - np.median(cells[-2])
            peaks = [np.median([r["peak_rss_mb"] for r in runs[(b.name, c, n)]])
                     for n in ("floor", "handler")]
            print(f"| {b.name} | {c} | " + " | ".join(
                f"{np.median(v):.3f} ({min(v):.3f})" for v in cells) + f" | {gap:+.3f} | "
                f"{peaks[0]:.0f} / {peaks[1]:.0f} MB |")
    print("\n" + json.dumps({f"{b}|{c}|{n}": v for (b, c, n), v in runs.items()}))


if __name__ == "__main__":
    main()
