"""The sensitivity pass: which weighted nodes cause int8's damage. Each is measured end to end
on calibration text by quantizing every other node and keeping it in fp32; the nodes that cut
the error most come first, and the greedy mixed-precision recipe keeps in fp32 the shortest
such prefix that passes the gate."""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterator

import onnx

WEIGHTED = ("MatMul", "Attention")  # quantize_dynamic's ops with a constant weight


def units(proto: onnx.ModelProto) -> list[str]:
    """The nodes the pass measures: every MatMul with a constant weight, every Attention."""
    inits = {i.name for i in proto.graph.initializer}
    return [n.name for n in proto.graph.node
            if n.op_type in WEIGHTED and len(n.input) > 1 and n.input[1] in inits]


@dataclasses.dataclass
class Ranking:
    """The calibration error of the all-int8 file and, per node, how much of it keeping that
    node in fp32 removes (largest first)."""

    all_int8_error: float
    cuts: list[tuple[str, float]]
    seconds: float

    def worst(self) -> list[str]:
        """Nodes whose fp32 copy helps at all, most helpful first."""
        return [name for name, cut in self.cuts if cut > 0]

    def as_dict(self, shown: int = 12) -> dict[str, object]:
        return {"all_int8_error": round(self.all_int8_error, 5), "nodes_measured": len(self.cuts),
                "seconds": round(self.seconds, 1),
                "largest_cuts": [{"node": n, "error_cut": round(c, 5)} for n, c in self.cuts[:shown]]}


def rank(nodes: list[str], error_without: Callable[[list[str]], float]) -> Ranking:
    """`error_without(excluded)` is the calibration error of a file quantized with
    `excluded` kept fp32: once with none, once per node."""
    t0 = time.perf_counter()
    base = error_without([])
    cuts = sorted(((n, base - error_without([n])) for n in nodes), key=lambda c: -c[1])
    return Ranking(base, cuts, time.perf_counter() - t0)


def ladder(n: int) -> Iterator[int]:
    """Prefix lengths to try, about 1.5x apart (1, 2, 3, 4, 6, 9, 13, ...), ending at n."""
    k = 1
    while k < n:
        yield k
        k = max(k + 1, int(k * 1.5))
    if n:
        yield n


def shortest_passing(n: int, passes: Callable[[int], bool]) -> int | None:
    """The shortest prefix length in 1..n that `passes` (assumed monotone): up the ladder to
    the first that passes, then bisect down to the last that failed; None if n fails."""
    low = 0  # longest known to fail
    for k in ladder(n):
        if passes(k):
            high = k
            break
        low = k
    else:
        return None
    while high - low > 1:
        mid = (low + high) // 2
        if passes(mid):
            high = mid
        else:
            low = mid
    return high

