"""Requests -> runtime calls -> responses, for every route, and the ONE place where errors
become HTTP: runtime errors carry their status, schema errors are 422, bad JSON 400, a body
over the limit 413, anything unexpected 500 with the request id and no stack trace. No tensors
here: the runtime answers in JSON-ready values."""
from __future__ import annotations

import json
from typing import Any

from .. import __version__
from ..runtime import Pipeline
from ..runtime.errors import EmptyInputError, InvalidInputError, UnsupportedTaskError, XlmrError
from ..runtime.jsonable import vectors_as
from ..runtime.tasks import specs
from .routes import Route


class HttpError(Exception):
    """An error of the HTTP layer itself (body, schema): status and type as TEI names them."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type = status, error_type


class ModelUnavailable(XlmrError):
    """The bundle failed to load: the log has why, the caller gets only this (503)."""

    status = 503
    error_type = "model_unavailable"


def error_body(exc: BaseException, request_id: str) -> tuple[int, dict[str, Any]]:
    """(status, body) for any exception; internals never reach the caller. The body carries
    `type` and TEI's `error_type` (the same value), so TEI clients read it too."""
    if isinstance(exc, ModelUnavailable):
        status, message, kind = 503, f"model unavailable (request id {request_id})", \
            exc.error_type
    elif isinstance(exc, (XlmrError, HttpError)):
        status, message, kind = exc.status, str(exc), exc.error_type
    else:
        status, message, kind = 500, f"internal error (request id {request_id})", "internal_error"
    return status, {"error": message, "type": kind, "error_type": kind}


# TEI's error classes (its `error_type`), from our finer `type`s; on TEI's routes a request
# over a size limit is its 413 (TEI's "validation" status), as TEI answers
TEI_ERROR_TYPES = {"input_too_long": "validation", "too_many_inputs": "validation",
                   "payload_too_large": "validation", "empty_input": "empty",
                   "empty_body": "empty", "model_unavailable": "unhealthy",
                   "internal_error": "backend"}
TEI_OVER_LIMIT = ("input_too_long", "too_many_inputs", "payload_too_large")


def convention(errors: str, status: int, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """An error as the route's clients expect it: TEI's status and error class, OpenAI's
    body, or ours as it is (`type` and `error_type` the same)."""
    if errors == "tei":
        kind = payload["type"]
        status = 413 if kind in TEI_OVER_LIMIT else status
        return status, {**payload, "error_type": TEI_ERROR_TYPES.get(kind, "validation")
                        if status < 500 or kind in TEI_ERROR_TYPES else "backend"}
    if errors == "openai":
        return status, openai_error(payload)
    return status, payload


def openai_error(payload: dict[str, Any]) -> dict[str, Any]:
    """An error body as OpenAI's API writes it (its clients show `error.message`)."""
    return {"error": {"message": payload["error"], "type": payload["type"], "param": None,
                      "code": payload["type"]}}


def fields(body: Any, route: str, allowed: set[str], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The body as an object with only `allowed` fields and every `required` one, else 422."""
    if not isinstance(body, dict):
        raise HttpError(422, "validation", f"{route} takes a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise HttpError(422, "validation", f"unknown field(s) {', '.join(unknown)} for {route}; "
                                           f"allowed: {', '.join(sorted(allowed))}")
    missing = [k for k in required if k not in body]
    if missing:
        raise HttpError(422, "validation", f"{route} needs {', '.join(missing)}")
    return body


def flag(body: dict[str, Any], *names: str) -> bool:
    """A boolean field that may go by several names (TEI's `truncate`, HF's `truncation`)."""
    for name in names:
        value = body.get(name)
        if value is not None:
            if not isinstance(value, bool):
                raise HttpError(422, "validation", f"{name} must be true or false, got {value!r}")
            return value
    return False


def direction(body: dict[str, Any]) -> str:
    """TEI's truncation_direction: Right (the default: the end is cut) or Left."""
    value = body.get("truncation_direction") or "right"
    if not isinstance(value, str) or value.lower() not in ("right", "left"):
        raise HttpError(422, "validation", f"truncation_direction must be Right or Left, "
                                           f"got {value!r}")
    return value.lower()


class Service:
    """The routes over one loaded pipeline (or the error that kept it from loading)."""

    def __init__(self, pipe: Pipeline | None, max_inputs: int,
                 load_error: BaseException | None = None) -> None:
        self.pipe, self.max_inputs, self.load_error = pipe, max_inputs, load_error

    def answer(self, route: Route, body: Any) -> tuple[Any, int]:
        """The route's answer and the tokens it ran (for logs and metrics)."""
        pipe = self.ready()
        if not route.any_task and route.path not in pipe.spec.routes:
            served = [t for t, s in specs().items() if route.path in s.routes]
            raise UnsupportedTaskError(f"{route.path} needs a {' or '.join(served)} bundle; "
                                       f"this one serves {pipe.task}")
        with pipe.meter() as usage:
            result = getattr(self, route.view)(body)
        return result, usage.tokens

    def ready(self) -> Pipeline:
        if self.pipe is None:  # why is in the log (load_service), never in a response
            raise ModelUnavailable("model unavailable")
        return self.pipe

    def health(self, body: Any = None) -> dict[str, Any]:
        if self.pipe is None:
            return {"status": "error", "error": "model unavailable"}
        return {"status": "ok", **self.pipe.describe()}

    def info(self, body: Any = None) -> dict[str, Any]:
        """TEI's /info: what the model is and the limits a client should respect."""
        pipe = self.ready()
        m = pipe.manifest
        if pipe.task == "feature-extraction":
            model_type: dict[str, Any] = {"embedding": {
                "pooling": (m.sentence_embedding or {}).get("pooling", "cls")}}
        elif m.id2label:
            model_type = {"classifier": {"id2label": {str(k): v for k, v in m.id2label.items()}}}
        else:
            model_type = {"task": pipe.task}
        return {"model_id": m.name, "model_sha": m.source_revision,
                "model_dtype": pipe.precision, "model_type": model_type,
                "task": pipe.task, "max_input_length": m.max_length,
                "max_client_batch_size": self.max_inputs,
                "max_batch_tokens": self.max_inputs * m.max_length,
                "max_concurrent_requests": 1, "tokenization_workers": 1,
                "version": __version__}

    def check_count(self, inputs: Any) -> int:
        n = len(inputs) if isinstance(inputs, list) else 1
        if n > self.max_inputs:
            raise HttpError(422, "too_many_inputs",
                            f"batch size must be at most {self.max_inputs} (XLMR_MAX_INPUTS). "
                            f"Given: {n}")
        return n

    def predict(self, body: Any) -> Any:
        """Hugging Face inference schema: {"inputs": ..., "parameters": {...}}; TEI's top-level
        `truncate`, `truncation_direction` and `raw_scores` are understood as well."""
        pipe = self.ready()
        body = fields(body, "/predict", {"inputs", "parameters", "truncate", "truncation",
                                         "truncation_direction", "raw_scores"}, ("inputs",))
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            raise HttpError(422, "validation", "parameters must be an object")
        params = dict(params)
        # one truncation vocabulary: TEI's `truncate` (top level or in parameters) and HF's
        # `truncation` mean the same; each task's spec says how its pipeline spells it
        asked = flag(body, "truncate", "truncation") or flag(params, "truncate")
        params.pop("truncate", None)
        if "truncation" in params and "truncation" not in pipe.parameters:
            asked = flag(params, "truncation") or asked
            params.pop("truncation")
        if asked:
            if pipe.spec.truncation is None:
                hint = f" ({pipe.spec.truncation_hint})" if pipe.spec.truncation_hint else ""
                raise InvalidInputError(f"truncation is not supported for {pipe.task}{hint}")
            params.update(pipe.spec.truncation)
        if direction(body) != "right":
            raise InvalidInputError("truncation_direction Left is served by /embed; /predict "
                                    "truncates the end of a text")
        if flag(body, "raw_scores"):
            if "function_to_apply" not in pipe.parameters:
                raise InvalidInputError(f"raw_scores is for text-classification, not {pipe.task}")
            params["function_to_apply"] = "none"
        inputs = body["inputs"]
        if inputs is None or inputs == "" or inputs == []:
            raise EmptyInputError("inputs is empty")
        self.check_count(inputs)
        return pipe.serve(inputs, **params)

    def embed(self, body: Any) -> Any:
        """Text Embeddings Inference's /embed: {"inputs", "normalize", "truncate",
        "truncation_direction"} (HF's `truncation` is the same as `truncate`)."""
        body = fields(body, "/embed", {"inputs", "normalize", "truncate", "truncation",
                                       "truncation_direction", "prompt_name"}, ("inputs",))
        if body.get("prompt_name") is not None:
            raise InvalidInputError("prompt_name: this bundle has no prompts")
        texts = self._texts(body, "inputs")
        normalize = body.get("normalize", True)
        if not isinstance(normalize, bool):
            raise HttpError(422, "validation", f"normalize must be true or false, got {normalize!r}")
        pipe: Any = self.ready()  # /embed is served only by feature-extraction (answer())
        return vectors_as(pipe.embed(texts, normalize=normalize,
                                     truncate=flag(body, "truncate", "truncation"),
                                     direction=direction(body)), "float")

    def openai_embeddings(self, body: Any) -> dict[str, Any]:
        """OpenAI's /v1/embeddings: {"input", "model", "encoding_format", "dimensions",
        "user"}; base64 is the float32 little-endian bytes, as OpenAI sends them."""
        body = fields(body, "/v1/embeddings", {"input", "model", "encoding_format", "dimensions",
                                               "user", "truncate"}, ("input",))
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise HttpError(422, "validation", f"encoding_format must be float or base64, "
                                               f"got {encoding!r}")
        pipe: Any = self.ready()
        texts = self._texts(body, "input")
        dims, width = body.get("dimensions"), pipe.bundle.output_width
        if dims is not None and dims != width:  # before any work
            raise HttpError(422, "validation", f"dimensions: this model's embeddings have "
                                               f"{width} dimensions and it was not trained to "
                                               f"be shortened; ask for {width} or leave it out")
        with pipe.meter() as usage:
            vectors = pipe.embed(texts, truncate=flag(body, "truncate"))
        return {"object": "list", "model": pipe.manifest.name,
                "data": [{"object": "embedding", "index": i, "embedding": v}
                         for i, v in enumerate(vectors_as(vectors, encoding))],
                "usage": {"prompt_tokens": usage.tokens, "total_tokens": usage.tokens}}

    def rerank(self, body: Any) -> list[dict[str, Any]]:
        """TEI's /rerank on a cross-encoder (text-classification) bundle."""
        body = fields(body, "/rerank", {"query", "texts", "truncate", "truncation", "raw_scores",
                                        "return_text", "truncation_direction"},
                      ("query", "texts"))
        query = body.get("query")
        if not isinstance(query, str) or not query:
            raise HttpError(422, "validation", '/rerank needs {"query": str, "texts": [str]}')
        texts = self._texts(body, "texts")
        pipe: Any = self.ready()  # a text-classification pipeline (answer() checked the route)
        return pipe.rerank(query, texts, truncate=flag(body, "truncate", "truncation"),
                           raw_scores=flag(body, "raw_scores"),
                           return_text=flag(body, "return_text"), direction=direction(body))

    def tokenize(self, body: Any) -> list[list[dict[str, Any]]]:
        """TEI's /tokenize: each input's tokens with id, text, special and character span."""
        body = fields(body, "/tokenize", {"inputs", "add_special_tokens", "prompt_name"},
                      ("inputs",))
        if body.get("prompt_name") is not None:
            raise InvalidInputError("prompt_name: this bundle has no prompts")
        add = body.get("add_special_tokens", True)
        if not isinstance(add, bool):
            raise HttpError(422, "validation", "add_special_tokens must be true or false")
        return self.ready().tokenize(self._texts(body, "inputs"), add_special_tokens=add)

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
        return json.loads(body, parse_constant=not_json)
    except json.JSONDecodeError as exc:
        raise HttpError(400, "bad_json", f"body is not valid JSON: {exc.msg} at position "
                                         f"{exc.pos}") from exc
    except RecursionError as exc:
        raise HttpError(400, "bad_json", "body is nested too deeply") from exc
    except ValueError as exc:  # the parser's own limits: an integer of over 4,300 digits
        raise HttpError(400, "bad_json", f"body is beyond the JSON parser's limits: {exc}") \
            from exc


def not_json(name: str) -> Any:
    """NaN and Infinity: Python's parser takes them, JSON has no such values."""
    raise ValueError(f"{name} is not a JSON value")
