"""Execution providers and threads: which provider a host gets (CUDA when onnxruntime-gpu and
a GPU are there, else CPU, said out loud), and intra-op threads from the CPUs this process may
really use (cgroup quota and affinity, as on Lambda), never the host's count."""
from __future__ import annotations

import logging
import math
import os
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import ProviderError

log = logging.getLogger("xlmr.runtime")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
PROVIDERS = ("auto", "cpu", "cuda")
# onnxruntime (1.29 and later) sends usage telemetry from Linux by default: at its first
# session it writes a device id and an SQLite event store under the cache folder and uploads
# events (the process, the sessions, the model's metadata) to Microsoft's collector from
# background threads. This, in the environment before onnxruntime's import, turns all of it
# off; the served process (aws_lambda/config.py) and the `xlmr` CLI set it unless the
# environment already says otherwise (ORT_DISABLE_TELEMETRY=0 turns it back on).
TELEMETRY_OFF = {"ORT_DISABLE_TELEMETRY": "1"}
# onnxruntime's graph optimizers a CPU session runs without: its CPU SkipLayerNormalization
# kernel is slower than the LayerNormalization and Add it would fuse (docs/design/
# skip-layer-norm.md); CUDA sessions keep every optimizer.
CPU_DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process can use: affinity mask, capped by a cgroup v2/v1 CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    return max(1, min(count, math.ceil(quota))) if quota else max(1, count)


def _cgroup_quota(root: Path) -> float | None:
    try:
        fields = (root / "cpu.max").read_text().split()
        if fields and fields[0] != "max":
            return int(fields[0]) / int(fields[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        q = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        p = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return q / p if q > 0 and p > 0 else None
    except (OSError, ValueError):
        return None


def both_wheels_installed(site: Path | None = None) -> bool:
    """onnxruntime and onnxruntime-gpu side by side: the CPU wheel hides the CUDA provider.
    Read from the dist-info folders beside the onnxruntime this process imports (`site`), not
    through importlib.metadata, whose import and scan of every path cost a cold start."""
    if site is None:
        import onnxruntime

        site = Path(onnxruntime.__file__).resolve().parents[1]
    found = {p.name.split("-")[0].lower() for p in site.glob("onnxruntime*.dist-info")}
    return {"onnxruntime", "onnxruntime_gpu"} <= found


def choose_provider(requested: str, available: Sequence[str]) -> str:
    """'cpu' or 'cuda' for `requested` given onnxruntime's available providers."""
    if requested != "cpu" and CUDA not in available and both_wheels_installed():
        log.warning("onnxruntime and onnxruntime-gpu are both installed: the CPU wheel hides the "
                    "CUDA provider (pip uninstall -y onnxruntime onnxruntime-gpu && "
                    "pip install onnxruntime-gpu)")
    if requested not in PROVIDERS:
        raise ProviderError(f"provider must be one of {', '.join(PROVIDERS)}, got {requested!r}")
    if requested == "cuda" and CUDA not in available:
        raise ProviderError("provider 'cuda' asked for, but this onnxruntime has no CUDA provider "
                            "(install xlmr-serverless[gpu], i.e. onnxruntime-gpu, not onnxruntime)")
    if requested == "auto":
        return "cuda" if CUDA in available else "cpu"
    return requested


# the call in which onnxruntime builds a session (optimisation, kernels, prepacking) with
# the GIL let go: onnxruntime's InferenceSession calls it on its native session
NATIVE_INIT = "initialize_session"


def signal_native_init(event: threading.Event, restore: Any = None) -> Callable[..., Any]:
    """A profile hook (sys.setprofile) that sets `event` when its thread calls onnxruntime's
    native session initialisation: from then on the session needs no GIL until it returns,
    and a GIL-bound job (the tokenizer) can run beside it. It then hands the thread back to
    the profiler it found (`restore`)."""
    def hook(frame: Any, what: str, arg: Any) -> None:
        if what == "c_call" and getattr(arg, "__name__", None) == NATIVE_INIT:
            event.set()
            sys.setprofile(restore)
    return hook


def create_session(path: Path, provider: str, threads: int | None,
                   strict: bool = False, native: threading.Event | None = None) -> tuple[Any, str]:
    """An InferenceSession on `provider`; returns it with the provider it really runs on.
    CUDA that fails to initialise (no GPU, no driver) falls back to CPU with a warning, or
    raises when the caller asked for CUDA explicitly (`strict`). `native`, if given, is set
    once the session's build runs without the GIL (or, at the latest, when it ends)."""
    found = sys.getprofile()
    try:
        if native is not None:
            sys.setprofile(signal_native_init(native, found))
        return _create_session(path, provider, threads, strict)
    finally:
        if native is not None:
            sys.setprofile(found)
            native.set()


def _create_session(path: Path, provider: str, threads: int | None,
                    strict: bool) -> tuple[Any, str]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or usable_cpus()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    providers: list[Any] = [CPU]
    if provider == "cuda":
        providers = [(CUDA, {"device_id": 0}), CPU]
    cpu_only = {} if provider == "cuda" else {"disabled_optimizers": CPU_DISABLED_OPTIMIZERS}
    session = ort.InferenceSession(str(path), opts, providers=providers, **cpu_only)
    used = "cuda" if session.get_providers()[0] == CUDA else "cpu"
    if provider == "cuda" and used != "cuda":
        if strict:
            raise ProviderError("provider 'cuda' asked for, but no GPU could be initialised")
        log.warning("CUDA provider could not start (no GPU?): serving on CPU")
    return session, used
