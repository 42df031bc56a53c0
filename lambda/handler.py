"""AWS Lambda entry point: `xlmr_serverless.aws_lambda.handler.handler`. The bundle loads here, once per
container, in the init phase (outside the handler), and warm invocations reuse it. Its load
begins before the handler's own imports (Powertools), which start once the load's imports are
done: onnxruntime builds the session without the GIL while they run (loading.py)."""
from __future__ import annotations

import time

_STARTED = time.perf_counter()

from typing import Any  # noqa: E402  (after the clock: the imports are a cold-start phase)

from .config import Settings  # noqa: E402
from .loading import start_loading  # noqa: E402

_SETTINGS = Settings.from_env()
_LOADING = start_loading(_SETTINGS)  # numpy, onnxruntime, the bundle: from here, on a thread

from .app import logger, make_handler, metrics  # noqa: E402  (beside the load)
from .snapstart import register  # noqa: E402

_HANDLER = make_handler(_SETTINGS, imports_ms=(time.perf_counter() - _STARTED) * 1000,
                        loading=_LOADING)
register(_HANDLER)  # SnapStart: warm before the snapshot, reseed and log after a restore


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(log_event=False, clear_state=True)
def handler(event: dict[str, Any], context: Any) -> Any:
    return _HANDLER(event, context)
