"""Requests -> runtime calls -> responses, for every route, and the ONE place where errors
become HTTP: runtime errors carry their status, schema errors are 422, bad JSON 400, a body
over the limit 413, anything unexpected 500 with the request id and no stack trace. No tensors
here: the runtime answers in JSON-ready values."""
from __future__ import annotations

import json
from typing import Any

from ..runtime import Pipeline
from ..runtime.errors import EmptyInputError, InvalidInputError, UnsupportedTaskError, XlmrError
from ..runtime.jsonable import to_jsonable
from ..runtime.tasks import specs


class HttpError(Exception):
    """An error of the HTTP layer itself (body, schema): status and type as TEI names them."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type = status, error_type


def error_body(exc: BaseException, request_id: str) -> tuple[int, dict[str, Any]]:
    """(status, body) for any exception; internals never reach the caller."""
    if isinstance(exc, (XlmrError, HttpError)):
        return exc.status, {"error": str(exc), "type": exc.error_type}
    return 500, {"error": f"internal error (request id {request_id})", "type": "internal_error"}


class Service:
    """The routes over one loaded pipeline (or the error that kept it from loading)."""

    def __init__(self, pipe: Pipeline | None, max_inputs: int = 64,
                 load_error: BaseException | None = None) -> None:
        self.pipe, self.max_inputs, self.load_error = pipe, max_inputs, load_error

    def answer(self, view: str, path: str, body: Any) -> tuple[Any, int]:
        """The route's answer and the tokens it ran (for logs and metrics)."""
        pipe = self.ready()
        if path not in pipe.spec.routes:
            served = [t for t, s in specs().items() if path in s.routes]
            raise UnsupportedTaskError(f"{path} needs a {' or '.join(served)} bundle; this one "
                                       f"serves {pipe.task}")
        with pipe.meter() as usage:
            result = getattr(self, view)(body)
        return result, usage.tokens

    def ready(self) -> Pipeline:
        if self.pipe is None:
            raise XlmrError(f"model failed to load: {self.load_error}")
        return self.pipe

    def health(self, body: Any = None) -> dict[str, Any]:
        if self.pipe is None:
            return {"status": "error", "error": f"model failed to load: {self.load_error}"}
        return {"status": "ok", **self.pipe.describe()}

    def check_count(self, inputs: Any) -> int:
        n = len(inputs) if isinstance(inputs, list) else 1
        if n > self.max_inputs:
            raise HttpError(422, "validation", f"batch size must be at most {self.max_inputs}. "
                                               f"Given: {n}")
        return n

    def predict(self, body: Any) -> Any:
        """Hugging Face inference schema: {"inputs": ..., "parameters": {...}}."""
        pipe = self.ready()
        if not isinstance(body, dict) or "inputs" not in body:
            raise HttpError(422, "validation", 'body must be {"inputs": ..., "parameters": {...}}')
        unknown = set(body) - {"inputs", "parameters"}
        if unknown:
            raise HttpError(422, "validation", f"unknown field(s) {', '.join(sorted(unknown))}")
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            raise HttpError(422, "validation", "parameters must be an object")
        params = dict(params)
        if params.pop("truncate", False):
            if pipe.spec.truncation is None:
                hint = f" ({pipe.spec.truncation_hint})" if pipe.spec.truncation_hint else ""
                raise InvalidInputError(f"truncate is not supported for {pipe.task}{hint}")
            params.update(pipe.spec.truncation)
        inputs = body["inputs"]
        if inputs is None or inputs == "" or inputs == []:
            raise EmptyInputError("inputs is empty")
        self.check_count(inputs)
        return to_jsonable(pipe(inputs, **params))

    def embed(self, body: Any) -> Any:
        """Text Embeddings Inference's /embed: {"inputs", "normalize", "truncate"}."""
        texts = self._texts(body, "inputs")
        pipe: Any = self.ready()  # /embed is served only by feature-extraction (answer())
        return to_jsonable(pipe.embed(texts, normalize=body.get("normalize", True),
                                      truncate=bool(body.get("truncate", False))))

    def openai_embeddings(self, body: Any) -> dict[str, Any]:
        """OpenAI-style /v1/embeddings: {"input", "model"}."""
        pipe: Any = self.ready()
        texts = self._texts(body, "input")
        vectors = to_jsonable(pipe.embed(texts, truncate=bool(body.get("truncate", False))))
        tokens = sum(pipe.count_tokens(texts))
        return {"object": "list", "model": body.get("model") or pipe.manifest.source_model,
                "data": [{"object": "embedding", "index": i, "embedding": v}
                         for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    def rerank(self, body: Any) -> list[dict[str, Any]]:
        """TEI's /rerank on a cross-encoder (text-classification) bundle."""
        query = body.get("query") if isinstance(body, dict) else None
        if not isinstance(query, str) or not query:
            raise HttpError(422, "validation", '/rerank needs {"query": str, "texts": [str]}')
        texts = self._texts(body, "texts")
        pipe: Any = self.ready()  # a text-classification pipeline (answer() checked the route)
        return pipe.rerank(query, texts, truncate=bool(body.get("truncate")),
                                   raw_scores=bool(body.get("raw_scores")),
                                   return_text=bool(body.get("return_text")))

    def _texts(self, body: Any, key: str) -> list[str]:
        value = body.get(key) if isinstance(body, dict) else None
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not texts or \
                not all(isinstance(t, str) and t for t in texts):
            raise HttpError(422, "validation", f"{key} must be a non-empty string or list of "
                                               "non-empty strings")
        self.check_count(texts)
        return texts


def parse_json(body: str | None, limit: int) -> Any:
    if body is None or body == "":
        raise HttpError(400, "empty_body", "request body is empty")
    if len(body.encode("utf-8")) > limit:
        raise HttpError(413, "payload_too_large", f"body must be at most {limit} bytes")
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise HttpError(400, "bad_json", f"body is not valid JSON: {exc.msg} at position "
                                         f"{exc.pos}") from exc
