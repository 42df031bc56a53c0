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


ROUTES: tuple[Route, ...] = (
    Route("GET", "/health", "health", "health", "model, task, provider and precision"),
    Route("POST", "/predict", "predict", "predict",
          'Hugging Face inference schema: {"inputs": ..., "parameters": {...}}'),
    Route("POST", "/embed", "embed", "embed", "Text Embeddings Inference's /embed",
          {"inputs": ["What is XLM-R?", "Qu'est-ce que XLM-R ?"], "normalize": True}),
    Route("POST", "/v1/embeddings", "openai_embeddings", "openai-embeddings",
          "OpenAI's embeddings API", {"input": ["hello", "bonjour"], "model": "xlmr"}),
    Route("POST", "/rerank", "rerank", "rerank", "Text Embeddings Inference's /rerank",
          {"query": "capital of France",
           "texts": ["Paris is the capital.", "Berlin is in Germany."]}),
)


def route(method: str, path: str) -> Route | None:
    return next((r for r in ROUTES if r.method == method and r.path == path), None)
