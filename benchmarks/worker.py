"""One contender in its own process, so no thread pool slows another (torch's and
onnxruntime's pools in one process slow each other). JSON lines on stdin/stdout:
{"op": "run", "case": ..., "iters": n} -> {"ms": [...]}; {"op": "output", ...} -> .npy path;
{"op": "rss"} -> peak RSS in MB."""
from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any

import numpy as np


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: that survives exec, so a child
    would report its parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    t0 = time.perf_counter()
    spec = json.loads(sys.argv[1])
    from benchmarks.contenders import KINDS, timed_runs

    model = KINDS[spec["kind"]](**spec)
    cases = {c["name"]: (np.load(c["ids"]), np.load(c["mask"])) for c in spec["cases"]}
    print(json.dumps({"ready": True, "load_s": time.perf_counter() - t0}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        res: dict[str, Any]
        if req["op"] == "run":
            ids, mask = cases[req["case"]]
            res = {"ms": timed_runs(model, ids, mask, spec.get("mask_id"), req["iters"])}
        elif req["op"] == "output":
            ids, mask = cases[req["case"]]
            np.save(req["path"], np.asarray(model(ids, mask, spec.get("mask_id")), np.float32))
            res = {"path": req["path"]}
        elif req["op"] == "rss":
            res = {"peak_rss_mb": peak_rss_mb()}
        else:
            break
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
