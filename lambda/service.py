"""Requests -> runtime calls -> answers, for every route: a request is checked against its
route's schema (lambda/schemas.py) before any work, then the view calls the runtime. Errors
are raised typed (lambda/errors.py builds their bodies). No tensors here: the runtime answers
in JSON-ready values."""
from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..runtime import Pipeline
from ..runtime.errors import EmptyInputError, InvalidInputError, UnsupportedTaskError
from ..runtime.jsonable import vectors_as
from ..runtime.parameters import violation
from ..runtime.tasks import specs
from ..runtime.usage import Usage
from .errors import HttpError, ModelUnavailable

if TYPE_CHECKING:
    from .routes import Route


@dataclasses.dataclass(frozen=True)
class Reply:
    """A view's answer with a status other than 200 (/health of a bundle that failed: 503)."""

    body: Any
    status: int = 200


def flag(body: dict[str, Any], *names: str) -> bool:
    """A boolean field that may go by several names (TEI's `truncate`, HF's `truncation`):
    the first one given. A route's schema makes its own fields booleans; `parameters` holds
    what the task's schema checks, so a flag read from there is checked here."""
    value = next((body[n] for n in names if body.get(n) is not None), False)
    if not isinstance(value, bool):
        raise HttpError(422, "validation", f"{names[0]} must be true or false, got {value!r}")
    return value


def direction(body: dict[str, Any]) -> str:
    """TEI's truncation_direction: right (the default: the end is cut) or left."""
    return str(body.get("truncation_direction") or "right").lower()


class Service:
    """The routes over one loaded pipeline (or the error that kept it from loading)."""

    def __init__(self, pipe: Pipeline | None, max_inputs: int,
                 load_error: BaseException | None = None) -> None:
        self.pipe, self.max_inputs, self.load_error = pipe, max_inputs, load_error

    def answer(self, route: Route, body: Any) -> tuple[Any, Usage]:
        """The route's answer and what it ran (for logs, metrics and headers): the body must
        match the route's schema (as TEI reads the body first), the bundle must serve the
        route, then its view runs."""
        if not route.needs_model:
            return route.view(self, body), Usage()
        pipe = self.ready()
        if route.request is not None:
            wrong = violation(route.request, body)
            if wrong:
                raise HttpError(422, "validation", f"{route.path}: {wrong}")
        if not route.any_task and route.path not in pipe.spec.routes:
            served = [t for t, s in specs().items() if route.path in s.routes]
            raise UnsupportedTaskError(f"{route.path} needs a {' or '.join(served)} bundle; "
                                       f"this one serves {pipe.task}")
        declared = {h.name for h in pipe.spec.heads}  # a task that has such heads must hold them
        missing = [h for h in route.heads if h in declared and h not in pipe.heads]
        if missing:
            raise UnsupportedTaskError(f"{route.path} needs a bundle with the {', '.join(missing)} "
                                       "head (as BGE-M3's checkpoint has); this one has "
                                       f"{', '.join(pipe.heads) or 'no extra heads'}")
        with pipe.meter() as usage:
            result = route.view(self, body)
        return result, usage

    @property
    def task(self) -> str | None:
        return self.pipe.task if self.pipe is not None else None

    def ready(self) -> Pipeline:
        if self.pipe is None:  # why is in the log (load_service), never in a response
            raise ModelUnavailable("model unavailable")
        return self.pipe

    def health(self, body: Any = None) -> Reply:
        if self.pipe is None:
            return Reply({"status": "error", "error": "model unavailable"}, 503)
        return Reply({"status": "ok", **self.pipe.describe()})

    def info(self, body: Any = None) -> dict[str, Any]:
        """TEI's /info: what the model is and the limits a client should respect."""
        pipe = self.ready()
        m = pipe.manifest
        if pipe.task == "feature-extraction":
            model_type: dict[str, Any] = {"embedding": {
                "pooling": (m.sentence_embedding or {}).get("pooling", "cls")}}
        elif pipe.task == "sparse-embedding":
            model_type = {"embedding": {"pooling": "splade"}}
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
        params = dict(body.get("parameters") or {})
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
        texts = self._texts(body, "inputs")
        normalize = body.get("normalize", True)
        pipe: Any = self.ready()  # /embed is served only by feature-extraction (answer())
        return vectors_as(pipe.embed(texts, normalize=normalize,
                                     truncate=flag(body, "truncate", "truncation"),
                                     direction=direction(body), dimensions=body.get("dimensions"),
                                     prompt_name=body.get("prompt_name")), "float")

    def embed_all(self, body: dict[str, Any]) -> list[list[list[float]]]:
        """Text Embeddings Inference's /embed_all: every token's vector, per text."""
        texts = self._texts(body, "inputs")
        pipe: Any = self.ready()  # served by feature-extraction only (answer() checked)
        return [vectors_as(v, "float") for v in pipe.token_vectors(
            texts, truncate=flag(body, "truncate", "truncation"), direction=direction(body),
            prompt_name=body.get("prompt_name"))]

    def embed_sparse(self, body: dict[str, Any]) -> list[list[dict[str, Any]]]:
        """Text Embeddings Inference's /embed_sparse: each text's non-zero token weights as
        [{"index", "value"}], from a bundle with a sparse head."""
        texts = self._texts(body, "inputs")
        pipe: Any = self.ready()  # SPLADE, or with a sparse head (answer() checked the route)
        return pipe.embed_sparse(texts, truncate=flag(body, "truncate", "truncation"),
                                 direction=direction(body), prompt_name=body.get("prompt_name"))

    def openai_embeddings(self, body: Any) -> dict[str, Any]:
        """OpenAI's /v1/embeddings: {"input", "model", "encoding_format", "dimensions",
        "user"}; base64 is the float32 little-endian bytes, as OpenAI sends them."""
        encoding = body.get("encoding_format") or "float"
        pipe: Any = self.ready()
        texts = self._texts(body, "input")
        with pipe.meter() as usage:
            vectors = pipe.embed(texts, truncate=flag(body, "truncate"),
                                 dimensions=body.get("dimensions"))
        return {"object": "list", "model": pipe.manifest.name,
                "data": [{"object": "embedding", "index": i, "embedding": v}
                         for i, v in enumerate(vectors_as(vectors, encoding))],
                "usage": {"prompt_tokens": usage.tokens, "total_tokens": usage.tokens}}

    def rerank(self, body: Any) -> list[dict[str, Any]]:
        """TEI's /rerank on a cross-encoder (text-classification) bundle."""
        texts = self._texts(body, "texts")
        pipe: Any = self.ready()  # a text-classification pipeline (answer() checked the route)
        return pipe.rerank(body["query"], texts, truncate=flag(body, "truncate", "truncation"),
                           raw_scores=flag(body, "raw_scores"),
                           return_text=flag(body, "return_text"), direction=direction(body))

    def tokenize(self, body: Any) -> list[list[dict[str, Any]]]:
        """TEI's /tokenize: each input's tokens with id, text, special and character span."""
        add = body.get("add_special_tokens", True)
        pipe: Any = self.ready()
        texts = self._texts(body, "inputs")
        if body.get("prompt_name") is not None or pipe.task == "feature-extraction":
            if pipe.task != "feature-extraction":
                raise InvalidInputError("prompt_name: only an embedding bundle has prompts")
            texts = pipe.with_prompt(texts, body.get("prompt_name"))
        return pipe.tokenize(texts, add_special_tokens=add)

    def similarity(self, body: dict[str, Any]) -> list[float]:
        """TEI's /similarity: {"inputs": {"source_sentence", "sentences"}, "parameters":
        {"truncate", "truncation_direction", "prompt_name"}} -> each sentence's cosine
        similarity with the source."""
        pair, params = body["inputs"], body.get("parameters") or {}
        if not pair["sentences"]:
            raise EmptyInputError("inputs.sentences is empty")
        self.check_count([pair["source_sentence"], *pair["sentences"]])
        pipe: Any = self.ready()  # served by feature-extraction only (answer() checked)
        return pipe.cosine(pair["source_sentence"], pair["sentences"],
                           truncate=flag(params, "truncate"), direction=direction(params),
                           prompt_name=params.get("prompt_name"))

    def decode(self, body: dict[str, Any]) -> list[str]:
        """TEI's /decode: {"ids": [int] or [[int]], "skip_special_tokens": true} -> a text
        per sequence, always a list."""
        ids = body["ids"]
        sequences = ids if ids and isinstance(ids[0], list) else [ids]
        self.check_count(sequences)
        return self.ready().decode(sequences, body.get("skip_special_tokens", True))

    def _texts(self, body: dict[str, Any], key: str) -> list[str]:
        """The field's texts as a list (the schema made it a text or a list of texts, or, as
        TEI's Input, token ids in place of a text: each read as the text its ids decode to,
        special tokens left out, which the pipeline then tokenizes as any text)."""
        value = body[key]
        # (JSON Schema's integers include 2.0: the schema let integral numbers through)
        single = isinstance(value, str) or bool(value) and all(
            isinstance(v, (int, float)) for v in value)
        items = [value] if single else list(value)
        self.check_count(items)
        at = [i for i, v in enumerate(items) if isinstance(v, list)]
        if at:
            ids = [[int(t) for t in items[i]] for i in at]
            for i, text in zip(at, self.ready().decode(ids)):
                items[i] = text
        return items




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
