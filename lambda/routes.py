"""The route table: every HTTP route the function answers, in one place, each with the view
that answers it and the schemas of its bodies. The resolver registers these, the OpenAPI
document is built from them, the template test holds template.yaml to them, and
events/make_events.py writes a sample event for each. Which tasks serve a POST route is each
task spec's `routes`."""
from __future__ import annotations

import dataclasses
from functools import cache
from typing import Any, Callable, Mapping

from ..runtime.tasks import task_spec
from . import schemas
from .openapi import document
from .schemas import Schema
from .service import Service


@dataclasses.dataclass(frozen=True)
class Route:
    method: str
    path: str
    view: Callable[[Service, Any], Any]  # answers the (checked) body
    name: str  # for event files and the template's event names
    summary: str
    answer: Schema  # the 200 body
    request: Schema | None = None  # the body's schema (None: no body)
    sample: Mapping[str, Any] | None = None  # a body; None: the task spec's sample (or no body)
    any_task: bool = False  # served whatever the bundle's task (else: the specs' `routes`)
    needs_model: bool = True  # False: answered even when the bundle failed to load
    errors: str = "hf"  # whose error conventions (lambda/errors.py): "hf", "tei", "openai"
    also: tuple[int, ...] = ()  # other statuses whose body is `answer`'s shape
    # extra heads the bundle must have, where its task has such heads (a spec's `heads`)
    heads: tuple[str, ...] = ()


def openapi(service: Service, body: Any = None) -> dict[str, Any]:
    """GET /openapi.json: the document with the served task's parameters, when it loaded."""
    return openapi_document(service.task)


@cache
def openapi_document(task: str | None = None) -> dict[str, Any]:
    """The whole API; `parameters` as `task` takes them (as any task does when None)."""
    return document(ROUTES, task)


def invocations(service: Service, body: Any) -> Any:
    """SageMaker's POST /invocations: the bundle's natural route (its spec's
    `natural_route`, as TEI dispatches /invocations by model type), body checked against
    that route's schema."""
    natural = service.ready().spec.natural_route  # in the table: tests/test_registries.py
    return service.answer(next(r for r in ROUTES if r.method == "POST" and r.path == natural),
                          body)[0]


ROUTES: tuple[Route, ...] = (
    Route("GET", "/health", Service.health, "health", "Model, task, provider and precision",
          schemas.HEALTH_ANSWER, any_task=True, needs_model=False, also=(503,)),
    Route("GET", "/info", Service.info, "info", "Text Embeddings Inference's /info",
          schemas.INFO_ANSWER, any_task=True, errors="tei"),
    Route("GET", "/openapi.json", openapi, "openapi",
          "This API as an OpenAPI 3.1 document", schemas.OPENAPI_ANSWER, any_task=True,
          needs_model=False),
    Route("POST", "/predict", Service.predict, "predict",
          'Hugging Face inference schema: {"inputs": ..., "parameters": {...}}',
          schemas.PREDICT_ANSWER, schemas.PREDICT),
    Route("POST", "/embed", Service.embed, "embed", "Text Embeddings Inference's /embed",
          schemas.EMBED_ANSWER, schemas.EMBED,
          {"inputs": ["What is XLM-R?", "Qu'est-ce que XLM-R ?"], "normalize": True},
          errors="tei"),
    Route("POST", "/embed_all", Service.embed_all, "embed-all",
          "Text Embeddings Inference's /embed_all: every token's vector",
          schemas.EMBED_ALL_ANSWER, schemas.EMBED_ALL, {"inputs": ["What is XLM-R?"]},
          errors="tei"),
    Route("POST", "/embed_sparse", Service.embed_sparse, "embed-sparse",
          "Text Embeddings Inference's /embed_sparse: each token id's weight (a sparse head)",
          schemas.EMBED_SPARSE_ANSWER, schemas.EMBED_SPARSE, {"inputs": ["What is XLM-R?"]},
          errors="tei", heads=("token_weights",)),
    Route("POST", "/v1/embeddings", Service.openai_embeddings, "openai-embeddings",
          "OpenAI's embeddings API", schemas.OPENAI_EMBEDDINGS_ANSWER, schemas.OPENAI_EMBEDDINGS,
          {"input": ["hello", "bonjour"], "model": "xlmr"}, errors="openai"),
    Route("POST", "/rerank", Service.rerank, "rerank", "Text Embeddings Inference's /rerank",
          schemas.RERANK_ANSWER, schemas.RERANK,
          {"query": "capital of France",
           "texts": ["Paris is the capital.", "Berlin is in Germany."]}, errors="tei"),
    Route("POST", "/tokenize", Service.tokenize, "tokenize",
          "Text Embeddings Inference's /tokenize", schemas.TOKENIZE_ANSWER, schemas.TOKENIZE,
          {"inputs": "XLM-R runs on AWS Lambda.", "add_special_tokens": True}, any_task=True,
          errors="tei"),
    Route("POST", "/similarity", Service.similarity, "similarity",
          "Text Embeddings Inference's /similarity", schemas.SIMILARITY_ANSWER, schemas.SIMILARITY,
          {"inputs": {"source_sentence": "What is XLM-R?",
                      "sentences": ["XLM-R is a multilingual encoder.", "Lambda runs code."]}},
          errors="tei"),
    Route("GET", "/ping", Service.health, "ping", "SageMaker's health check (as /health)",
          schemas.HEALTH_ANSWER, any_task=True, needs_model=False, also=(503,)),
    Route("POST", "/invocations", invocations, "invocations",
          "SageMaker's inference route: the bundle's natural route (/embed or /predict)",
          schemas.INVOCATIONS_ANSWER, schemas.INVOCATIONS, {"inputs": ["What is XLM-R?"]},
          any_task=True, errors="tei"),
    Route("POST", "/decode", Service.decode, "decode", "Text Embeddings Inference's /decode",
          schemas.DECODE_ANSWER, schemas.DECODE,
          {"ids": [0, 1542, 9, 1], "skip_special_tokens": True}, any_task=True, errors="tei"),
)


def allowed_methods(path: str) -> list[str]:
    """The methods the route table answers on `path` (empty: no such route)."""
    return sorted({r.method for r in ROUTES if r.path == path})


def route(method: str, path: str) -> Route | None:
    return next((r for r in ROUTES if r.method == method and r.path == path), None)


def sample_request(task: str) -> tuple[str, dict[str, Any]]:
    """(path, body) of a request fit for `task`: the sample of the first of its routes that
    has one (/embed for embeddings), else the task spec's /predict sample."""
    spec = task_spec(task)
    extra = next((r for r in (route("POST", p) for p in spec.routes) if r and r.sample), None)
    return (extra.path, dict(extra.sample or {})) if extra else ("/predict", dict(spec.sample))


def conventions(path: str) -> str:
    """Whose error conventions a path speaks (for a 405 there: any of its routes')."""
    return next((r.errors for r in ROUTES if r.path == path), "hf")
