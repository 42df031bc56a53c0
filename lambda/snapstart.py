"""Lambda SnapStart hooks (snapshot_restore_py, which the AWS Python 3.12+ base images and
awslambdaric 4.x run): before the snapshot, the loaded bundle runs a forward pass per
sequence length and the task's sample request goes through the whole handler, so that what a
restored copy's first request would pay is in the snapshot,
and the allocator hands its freed pages back, so that the snapshot holds only what is live;
after a restore, the random generator is reseeded (a snapshot's state is shared by every
copy restored from it) and a log line says the function was restored and how long after its
snapshot. The bundle (S3 included) is read before the snapshot; nothing keeps a network
connection or a credential across it."""
from __future__ import annotations

import ctypes
import gc
import random
import time
from pathlib import Path

from .app import Handler, logger
from .local import sample_event


def memory_mb() -> dict[str, float]:
    """This process's resident memory (MB): all of it, its heap and other anonymous pages, and
    its file pages (mapped weights and libraries), from /proc/self/status."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return {}
    fields = {"rss": "VmRSS", "anon": "RssAnon", "file": "RssFile"}
    return {k: round(int(text.split(f"{f}:")[1].split()[0]) / 1024, 1)
            for k, f in fields.items() if f"{f}:" in text}


def release_free_memory() -> str:
    """Hand the allocator's free pages back to the kernel, so that a snapshot does not carry
    them: tcmalloc (the image preloads it) or glibc's malloc_trim; returns which ran."""
    process = ctypes.CDLL(None)
    for name, call in (("tcmalloc", "MallocExtension_ReleaseFreeMemory"), ("glibc", "malloc_trim")):
        fn = getattr(process, call, None)
        if fn is not None:
            fn(*((0,) if name == "glibc" else ()))
            return name
    return "none"


def register(handler: Handler) -> bool:
    """Register both hooks for `handler`'s service; False where snapshot_restore_py is not
    installed (they only ever run under SnapStart)."""
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:
        return False
    snapshot: dict[str, float] = {}

    def before_snapshot() -> None:
        bundle = handler.service.ready().bundle  # a load failure fails the publish
        rss = {"loaded": memory_mb()}
        warm = bundle.warm_up(handler.settings.warm_up_lengths)
        sample = None
        if handler.settings.warm_up_lengths:  # the task's sample, through every layer
            answer = handler.rehearse(sample_event(handler.settings.bundle_dir))
            sample = answer.get("statusCode") if isinstance(answer, dict) else None
        rss["warmed"] = memory_mb()
        gc.collect()
        allocator = release_free_memory()
        rss["released"] = memory_mb()
        snapshot["at"] = time.time()
        logger.info("snapshot ready", extra={"warm_up_ms": warm, "sample_status": sample,
                                             "memory_mb": rss, "released_by": allocator})

    def after_restore() -> None:
        random.seed()
        handler.restored_at = time.perf_counter()
        logger.info("restored from snapshot", extra={
            "seconds_since_snapshot": round(time.time() - snapshot.get("at", time.time()), 1)})

    register_before_snapshot(before_snapshot)
    register_after_restore(after_restore)
    return True
