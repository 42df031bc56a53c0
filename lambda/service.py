"""Requests -> runtime calls -> responses, for every route, and the ONE place where errors
become HTTP: runtime errors carry their status, schema errors are 422, bad JSON 400, a body
over the limit 413, anything unexpected 500 with the request id and no stack trace."""
from __future__ import annotations

import json
import time
from typing import Any, cast

import numpy as np

from runtime import Pipeline
from runtime.errors import EmptyInputError, InvalidInputError, UnsupportedTaskError, XlmrError
from runtime.tasks.text_classification import TextClassificationPipeline

# how `truncate` maps onto each task's own parameter (TEI's flag, default false)
TRUNCATE: dict[str, dict[str, Any]] = {
    "text-classification": {"truncation": True},
    "feature-extraction": {"truncation": True},
    "multiple-choice": {"truncation": True},
    "fill-mask": {"tokenizer_kwargs": {"truncation": True}},
}


class HttpError(Exception):
    """An error of the HTTP layer itself (body, schema): status and type as TEI names them."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type = status, error_type


def to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


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

    @property
    def task(self) -> str:
        return self.ready().manifest.task

    def ready(self) -> Pipeline:
        if self.pipe is None:
            raise XlmrError(f"model failed to load: {self.load_error}")
        return self.pipe

    def health(self) -> dict[str, Any]:
        if self.pipe is None:
            return {"status": "error", "error": f"model failed to load: {self.load_error}"}
        m, f = self.pipe.manifest, self.pipe.bundle.model_file
        return {"status": "ok", "model": m.source_model, "task": m.task,
                "architecture": m.architecture, "provider": self.pipe.provider,
                "precision": f.precision, "bundle_sha256": f.sha256, "max_length": m.max_length}

    def check_count(self, inputs: Any) -> int:
        n = len(inputs) if isinstance(inputs, list) else 1
        if n > self.max_inputs:
            raise HttpError(422, "validation", f"batch size must be at most {self.max_inputs}. "
                                               f"Given: {n}")
        return n

    def predict(self, body: dict[str, Any]) -> Any:
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
            if pipe.task not in TRUNCATE:
                hint = " (use stride)" if pipe.task == "token-classification" else ""
                raise InvalidInputError(f"truncate is not supported for {pipe.task}{hint}")
            params.update(TRUNCATE[pipe.task])
        inputs = body["inputs"]
        if inputs is None or inputs == "" or inputs == []:
            raise EmptyInputError("inputs is empty")
        self.check_count(inputs)
        return to_jsonable(pipe(inputs, **params))

    def _embedder(self) -> Any:
        pipe = self.ready()
        if pipe.manifest.task != "feature-extraction":
            raise UnsupportedTaskError(f"this route needs a feature-extraction bundle; this one "
                                       f"serves {pipe.manifest.task}")
        return pipe

    def embed(self, body: dict[str, Any]) -> list[list[float]]:
        """Text Embeddings Inference's /embed: {"inputs", "normalize", "truncate"}."""
        pipe = self._embedder()
        texts = self._texts(body, "inputs")
        vectors = pipe.embed(texts, normalize=body.get("normalize", True),
                             truncate=bool(body.get("truncate", False)))
        return vectors.tolist()

    def openai_embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        """OpenAI-style /v1/embeddings: {"input", "model"}."""
        pipe = self._embedder()
        texts = self._texts(body, "input")
        vectors = pipe.embed(texts, truncate=bool(body.get("truncate", False)))
        tokens = sum(pipe.count_tokens(texts))
        return {"object": "list", "model": body.get("model") or pipe.manifest.source_model,
                "data": [{"object": "embedding", "index": i, "embedding": v.tolist()}
                         for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    def rerank(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """TEI's /rerank on a cross-encoder (text-classification) bundle."""
        pipe = self.ready()
        if pipe.manifest.task != "text-classification":
            raise UnsupportedTaskError(f"/rerank needs a text-classification (cross-encoder) "
                                       f"bundle; this one serves {pipe.manifest.task}")
        query = body.get("query") if isinstance(body, dict) else None
        if not isinstance(query, str) or not query:
            raise HttpError(422, "validation", '/rerank needs {"query": str, "texts": [str]}')
        texts = self._texts(body, "texts")
        pairs: list[str | tuple[str, str]] = [(query, t) for t in texts]
        logits = np.stack(cast(TextClassificationPipeline, pipe).forward(pairs, {"truncation": "only_second" if body.get("truncate")
                                               else None})).astype(np.float32)
        scores = relevance(logits, raw=bool(body.get("raw_scores")))
        out = [{"index": i, "score": float(s), **({"text": texts[i]} if body.get("return_text")
                                                  else {})} for i, s in enumerate(scores)]
        return sorted(out, key=lambda d: d["score"], reverse=True)

    def _texts(self, body: Any, key: str) -> list[str]:
        value = body.get(key) if isinstance(body, dict) else None
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not texts or \
                not all(isinstance(t, str) and t for t in texts):
            raise HttpError(422, "validation", f"{key} must be a non-empty string or list of "
                                               "non-empty strings")
        self.check_count(texts)
        return texts


def relevance(logits: np.ndarray, raw: bool) -> np.ndarray:
    """Cross-encoder relevance: one logit -> sigmoid, several -> P(last label); raw -> logit."""
    from runtime.ops import sigmoid, softmax

    if raw:
        return logits[:, -1]
    return sigmoid(logits[:, 0]) if logits.shape[1] == 1 else softmax(logits)[:, -1]


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


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t0) * 1000
