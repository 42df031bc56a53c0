"""Soak: many mixed requests (valid, invalid, over budget, and the hostile requests of
tests/hostile.py that fit the bundle's task) through the Lambda handler in one process, as a
warm container lives; per block of requests the latency p50/p99 and the RSS, over all the
status counts (no 5xx allowed, none lost), and per kind the slowest request and the largest
growth of the peak RSS during one request. Not a test: it prints and records figures.

    python -m benchmarks.soak BUNDLE [--requests 10000] [--output DIR]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import machine, record


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def peak_rss_now_mb() -> float:
    """The peak RSS since it was last reset (clear_refs), MB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))


def requests(task: str, rng: random.Random) -> list[tuple[str, str, Any]]:
    """(kind, route, event body or raw text) mixes: what a public endpoint sees in a day."""
    from tests.hostile import CASES
    from xlmr_serverless.runtime.tasks import task_spec

    sample = dict(task_spec(task).sample)
    words = "the of Paris Berlin 東京 القاهرة lambda model serves text quickly".split()

    def text(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n))

    valid = [("valid", {**sample})]
    if task == "feature-extraction":  # sentence embeddings, as an embedding endpoint serves
        valid += [("valid", {"inputs": [text(rng.randint(3, 60)) for _ in range(rng.randint(1, 8))],
                             "parameters": {"pooling": "mean", "normalize": True}})
                  for _ in range(4)]
    invalid = [("invalid", "{not json"), ("invalid", {"inputs": None}),
               ("invalid", {"inputs": "x", "parameters": {"bogus": 1}}),
               ("invalid", {"inputs": [1, 2, 3]})]
    over = [("over_budget", {"inputs": [text(400)] * 12, "parameters": {"truncation": True}})]
    hostile = [(f"hostile:{c.name}", c.route, c.body) for c in CASES
               if c.task == task or c.route == "/tokenize"]
    plain = [(kind, "/predict", body) for kind, body in valid * 6 + invalid + over]
    return plain + hostile * max(1, len(plain) // max(len(hostile), 1))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("bundle")
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--block", type=int, default=1_000)
    p.add_argument("--output", default="")
    a = p.parse_args()
    from xlmr_serverless.aws_lambda.app import make_handler
    from xlmr_serverless.aws_lambda.config import Settings
    from xlmr_serverless.aws_lambda.local import LocalContext
    from xlmr_serverless.aws_lambda.wsgi import http_event

    handler = make_handler(dataclasses.replace(Settings.from_env({}), bundle_dir=Path(a.bundle)))
    task = handler.service.ready().task
    rng = random.Random(0)
    pool = requests(task, rng)
    statuses: Counter[str] = Counter()
    worst: dict[str, dict[str, float]] = {}
    blocks, lat = [], []
    lost, peak = 0, 0.0
    start_rss = rss_mb()
    for i in range(1, a.requests + 1):
        kind, path, body = rng.choice(pool)
        raw = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
        event = http_event("POST", path, raw, {"content-type": "application/json"})
        Path("/proc/self/clear_refs").write_text("5")  # the peak RSS counts from here
        before = rss_mb()
        t0 = time.perf_counter()
        try:
            res = handler(event, LocalContext())
        except BaseException:  # noqa: B036 - a request that escaped the handler is lost
            lost += 1
            continue
        ms = (time.perf_counter() - t0) * 1000
        lat.append(ms)
        now_peak = peak_rss_now_mb()
        grown, peak = now_peak - before, max(peak, now_peak)
        w = worst.setdefault(kind.split(":")[0], {"max_ms": 0.0, "max_rss_growth_mb": 0.0})
        w["max_ms"], w["max_rss_growth_mb"] = max(w["max_ms"], ms), max(w["max_rss_growth_mb"],
                                                                          grown)
        statuses[f"{kind}:{res['statusCode']}"] += 1
        if i % a.block == 0:
            arr = np.asarray(lat)
            blocks.append({"requests": i, "p50_ms": float(np.percentile(arr, 50)),
                           "p99_ms": float(np.percentile(arr, 99)), "rss_mb": rss_mb()})
            lat = []
            print(json.dumps(blocks[-1]), flush=True)
    result = {"bundle": str(a.bundle), "task": task, "machine": machine(),
              "requests": a.requests, "statuses": dict(statuses), "blocks": blocks,
              "rss_start_mb": start_rss, "rss_end_mb": rss_mb(), "peak_rss_mb": peak,
              "worst_per_kind": worst, "lost": lost,
              "server_errors": sum(n for k, n in statuses.items()
                                   if int(k.rsplit(":", 1)[1]) >= 500)}
    print(json.dumps({k: v for k, v in result.items() if k != "blocks"}, indent=1))
    record(a.output, "soak.json", result)


if __name__ == "__main__":
    main()
