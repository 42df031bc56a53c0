"""Every error body the API sends, built by one function in the three conventions its clients
read: ours (Hugging Face's `error`, with `type`), Text Embeddings Inference's (its statuses
and `error_type` classes) and OpenAI's (`{"error": {"message", "type", ...}}`). Internals
never reach the caller: a 5xx names the request id, the log holds the rest."""
from __future__ import annotations

import json
from typing import Any

from ..runtime.errors import XlmrError


class HttpError(Exception):
    """An error of the HTTP layer itself (event, body, schema, route): status and type."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type = status, error_type


class ModelUnavailable(XlmrError):
    """The bundle failed to load: the log has why, the caller gets only this (503)."""

    status = 503
    error_type = "model_unavailable"


# TEI's error classes (its `error_type`) from our finer `type`s; on TEI's routes a request over
# a size limit is its 413, as TEI answers
TEI_ERROR_TYPES = {"input_too_long": "validation", "too_many_inputs": "validation",
                   "payload_too_large": "validation", "empty_input": "empty",
                   "empty_body": "empty", "model_unavailable": "unhealthy",
                   "internal_error": "backend"}
TEI_OVER_LIMIT = ("input_too_long", "too_many_inputs", "payload_too_large")
# TEI answers a route its model cannot serve (/rerank on an embedding model, /embed_sparse
# without SPLADE) with 424 and error_type "backend"
TEI_UNSERVED = "unsupported_task"
# what no request may turn into an error body: the process is being told to stop
FATAL = (KeyboardInterrupt, SystemExit)


def error_body(exc: BaseException, request_id: str, errors: str = "hf") -> tuple[int, dict[str, Any]]:
    """(status, body) for any exception, in the convention `errors` names. Ours carries `type`
    and the same value as `error_type`; TEI's carries TEI's class in `error_type`."""
    if isinstance(exc, ModelUnavailable):
        status, message, kind = 503, f"model unavailable (request id {request_id})", \
            exc.error_type
    elif isinstance(exc, (XlmrError, HttpError)):
        status, message, kind = exc.status, str(exc), exc.error_type
    else:
        status, message, kind = 500, f"internal error (request id {request_id})", "internal_error"
    if errors == "openai":
        return status, {"error": {"message": message, "type": kind, "param": None,
                                  "code": kind}}
    error_type = kind
    if errors == "tei":
        status = 413 if kind in TEI_OVER_LIMIT else 424 if kind == TEI_UNSERVED else status
        error_type = "backend" if kind == TEI_UNSERVED else \
            TEI_ERROR_TYPES.get(kind, "validation" if status < 500 else "backend")
    return status, {"error": message, "type": kind, "error_type": error_type}


def error_response(status: int, payload: dict[str, Any]) -> dict[str, Any]:
    """An API Gateway proxy response carrying an error body."""
    return {"statusCode": status, "headers": {"Content-Type": "application/json"},
            "body": json.dumps(payload), "isBase64Encoded": False}
