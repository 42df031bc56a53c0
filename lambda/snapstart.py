"""Lambda SnapStart hooks (snapshot_restore_py, which the AWS Python 3.12+ base images and
awslambdaric 4.x run): before the snapshot, the loaded bundle runs a forward pass per
sequence length, so that what a restored copy's first request would pay is in the snapshot;
after a restore, the random generator is reseeded (a snapshot's state is shared by every
copy restored from it) and a log line says the function was restored and how long after its
snapshot. The bundle (S3 included) is read before the snapshot; nothing keeps a network
connection or a credential across it."""
from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import Handler


def register(handler: Handler) -> bool:
    """Register both hooks for `handler`'s service; False where snapshot_restore_py is not
    installed (they only ever run under SnapStart)."""
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:
        return False
    from .app import logger

    snapshot: dict[str, float] = {}

    def before_snapshot() -> None:
        # a load failure fails the publish
        warm = handler.service.ready().bundle.warm_up(handler.settings.warm_up_lengths)
        snapshot["at"] = time.time()
        logger.info("snapshot ready", extra={"warm_up_ms": warm})

    def after_restore() -> None:
        random.seed()
        handler.restored_at = time.perf_counter()
        logger.info("restored from snapshot", extra={
            "seconds_since_snapshot": round(time.time() - snapshot.get("at", time.time()), 1)})

    register_before_snapshot(before_snapshot)
    register_after_restore(after_restore)
    return True
