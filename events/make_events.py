"""Derive the sample events from the two that `sam local generate-event` printed:
    sam local generate-event apigateway http-api-proxy > base-http-api-proxy.json
    sam local generate-event apigateway aws-proxy --method POST --path predict > base-aws-proxy.json
Each route gets an HTTP API (2.0) and a REST (1.0) event, for `sam local invoke -e` or
`xlmr invoke --event`. Run: python events/make_events.py"""
from __future__ import annotations

import copy
import json
from pathlib import Path

HERE = Path(__file__).parent
ROUTES = {
    "health": ("GET", "/health", None),
    "predict": ("POST", "/predict", {"inputs": "Paris is the <mask> of France.",
                                     "parameters": {"top_k": 3}}),
    "predict-classify": ("POST", "/predict", {"inputs": ["I love it", "Je déteste ça"]}),
    "predict-qa": ("POST", "/predict", {"inputs": {"question": "Where do I live?",
                                                   "context": "My name is Wolfgang and I live in Berlin."}}),
    "embed": ("POST", "/embed", {"inputs": ["What is XLM-R?", "Qu'est-ce que XLM-R ?"],
                                 "normalize": True}),
    "rerank": ("POST", "/rerank", {"query": "capital of France",
                                   "texts": ["Paris is the capital.", "Berlin is in Germany."]}),
    "openai-embeddings": ("POST", "/v1/embeddings", {"input": ["hello", "bonjour"],
                                                     "model": "xlmr"}),
}
HEADERS = {"content-type": "application/json", "accept": "application/json"}


def http_event(base: dict, method: str, path: str, body: dict | None) -> dict:
    e = copy.deepcopy(base)
    e.update(rawPath=path, rawQueryString="", headers=dict(HEADERS), isBase64Encoded=False,
             body=json.dumps(body, ensure_ascii=False) if body is not None else None)
    for k in ("cookies", "queryStringParameters", "pathParameters", "stageVariables"):
        e.pop(k, None)
    e["requestContext"]["http"].update(method=method, path=path)
    e["requestContext"]["domainName"] = "example.execute-api.us-east-1.amazonaws.com"
    return e


def rest_event(base: dict, method: str, path: str, body: dict | None) -> dict:
    e = copy.deepcopy(base)
    e.update(httpMethod=method, path=path, resource=path, isBase64Encoded=False,
             headers={k.title(): v for k, v in HEADERS.items()},
             multiValueHeaders={k.title(): [v] for k, v in HEADERS.items()},
             queryStringParameters=None, multiValueQueryStringParameters=None,
             pathParameters=None, stageVariables=None,
             body=json.dumps(body, ensure_ascii=False) if body is not None else None)
    e["requestContext"].update(httpMethod=method, path=f"/prod{path}", resourcePath=path)
    return e


if __name__ == "__main__":
    http_base = json.loads((HERE / "base-http-api-proxy.json").read_text())
    rest_base = json.loads((HERE / "base-aws-proxy.json").read_text())
    for name, (method, path, body) in ROUTES.items():
        for kind, make, base in (("http", http_event, http_base), ("rest", rest_event, rest_base)):
            out = HERE / f"{kind}-{name}.json"
            out.write_text(json.dumps(make(base, method, path, body), indent=2, ensure_ascii=False) + "\n")
