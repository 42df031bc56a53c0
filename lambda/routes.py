"""The route table: every HTTP route the function answers, in one place. The resolver
registers these, the template test holds template.yaml to them, and events/make_events.py
writes a sample event for each. Which tasks serve a POST route is each task spec's `routes`."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class Route:
    method: str
    path: str
    view: str  # the Service method that answers it
    name: str  # for event files and the template's event names
    summary: str
    sample: Mapping[str, Any] | None = None  # a body; None: the task spec's sample (or no body)
    any_task: bool = False  # served whatever the bundle's task (else: the specs' `routes`)
    schema: str = ""  # its request body's schema in lambda/openapi.py ("": no body)
    errors: str = "hf"  # whose error conventions: "hf", "tei" (TEI's statuses), "openai"


ROUTES: tuple[Route, ...] = (
    Route("GET", "/health", "health", "health", "Model, task, provider and precision",
          any_task=True),
    Route("GET", "/info", "info", "info", "Text Embeddings Inference's /info", any_task=True,
          errors="tei"),
    Route("GET", "/openapi.json", "openapi", "openapi", "This API as an OpenAPI 3.1 document",
          any_task=True),
    Route("POST", "/predict", "predict", "predict",
          'Hugging Face inference schema: {"inputs": ..., "parameters": {...}}', schema="predict"),
    Route("POST", "/embed", "embed", "embed", "Text Embeddings Inference's /embed",
          {"inputs": ["What is XLM-R?", "Qu'est-ce que XLM-R ?"], "normalize": True},
          schema="embed", errors="tei"),
    Route("POST", "/v1/embeddings", "openai_embeddings", "openai-embeddings",
          "OpenAI's embeddings API", {"input": ["hello", "bonjour"], "model": "xlmr"},
          schema="openai_embeddings", errors="openai"),
    Route("POST", "/rerank", "rerank", "rerank", "Text Embeddings Inference's /rerank",
          {"query": "capital of France",
           "texts": ["Paris is the capital.", "Berlin is in Germany."]}, schema="rerank",
          errors="tei"),
    Route("POST", "/tokenize", "tokenize", "tokenize", "Text Embeddings Inference's /tokenize",
          {"inputs": "XLM-R runs on AWS Lambda.", "add_special_tokens": True}, any_task=True,
          schema="tokenize", errors="tei"),
)


def allowed_methods(path: str) -> list[str]:
    """The methods the route table answers on `path` (empty: no such route)."""
    return sorted({r.method for r in ROUTES if r.path == path})


def route(method: str, path: str) -> Route | None:
    return next((r for r in ROUTES if r.method == method and r.path == path), None)
