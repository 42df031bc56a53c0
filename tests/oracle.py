"""Test support: the cost oracle. What one request cost the process that answered it: wall
time and the growth of its peak RSS (the kernel's high-water mark, reset before the request
through /proc/self/clear_refs), and the bounds every answer must stay within on the tiny test
bundles. The bounds catch a request that runs away; the goals themselves (1 s) are measured
by benchmarks.soak, not asserted on a shared CI machine. Time is bounded as the process's CPU
time (every thread's), which a runaway request spends and a busy neighbour does not; wall time
has a looser bound that catches a request that hangs. The test process's own objects (torch,
transformers, every earlier test's) are frozen first (gc.freeze, which costs nothing), so that a full garbage
collection the request's allocations happen to trigger walks what the request made, as in
the served process, not the test suite's heap."""
from __future__ import annotations

import dataclasses
import gc
import time
from pathlib import Path
from typing import Any, Callable

CPU_BOUND_S = 2.0  # CPU time of one request on a tiny bundle (the goal: 1 s wall, benchmarked)
WALL_BOUND_S = 10.0  # wall time: the test suites share two cores, so only a hang is caught
RSS_BOUND_MB = 100.0  # growth of the process's peak RSS during one request
RESPONSE_LIMIT = 6_000_000  # Lambda's synchronous response limit


@dataclasses.dataclass(frozen=True)
class Cost:
    wall_s: float
    cpu_s: float
    rss_growth_mb: float

    def within_bounds(self) -> bool:
        return self.cpu_s < CPU_BOUND_S and self.wall_s < WALL_BOUND_S \
            and self.rss_growth_mb < RSS_BOUND_MB


def _status_kb(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(text.split(f"{field}:")[1].split()[0])


def measured(fn: Callable[[], Any]) -> tuple[Any, Cost]:
    """fn()'s result and what it cost: wall and CPU time, and how far the peak RSS rose above
    the RSS it started from."""
    gc.freeze()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # the peak RSS starts again from now
        before = _status_kb("VmRSS")
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        gc.unfreeze()
    return result, Cost(wall, cpu, (_status_kb("VmHWM") - before) / 1024)


def response_size(res: Any) -> int:
    """The bytes a handler's response carries: its body, or the whole direct answer."""
    import json

    if isinstance(res, dict) and isinstance(res.get("body"), str):
        return len(res["body"].encode())
    return len(json.dumps(res, ensure_ascii=False).encode())
