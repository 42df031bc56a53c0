"""AWS Lambda entry point: `xlmr_serverless.aws_lambda.handler.handler`. The bundle loads here, once per
container, in the init phase (outside the handler), and warm invocations reuse it."""
from __future__ import annotations

from typing import Any

from .app import logger, make_handler, metrics
from .config import Settings

_HANDLER = make_handler(Settings.from_env())


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(log_event=False, clear_state=True)
def handler(event: dict[str, Any], context: Any) -> Any:
    return _HANDLER(event, context)
