"""The CPU's int8-relevant instruction set: onnxruntime picks its kernels by it, so a bundle
records the one it was tuned on, the runtime says when it runs on another, and every benchmark
figure names it (figures from different ISAs are never compared)."""
from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

# best first: the first flag present names the machine's int8 level
LEVELS = (("amx_int8", "amx"), ("avx512_vnni", "avx512_vnni"), ("avx_vnni", "avx_vnni"),
          ("avx512f", "avx512"), ("avx2", "avx2"), ("asimddp", "arm_dotprod"),
          ("asimd", "arm_neon"))


@cache
def cpu_flags() -> frozenset[str]:
    """The kernel's feature flags for CPU 0 (x86 `flags`, arm `Features`); empty if unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def isa(flags: frozenset[str] | None = None) -> str:
    """'amx', 'avx512_vnni', 'avx_vnni', 'avx512', 'avx2', 'arm_dotprod', 'arm_neon' or the
    machine name when none of those is known."""
    flags = cpu_flags() if flags is None else flags
    return next((name for flag, name in LEVELS if flag in flags), platform.machine() or "unknown")


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it ('' if it does not)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
