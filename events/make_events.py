"""Derive the sample events from the two that `sam local generate-event` printed:
    sam local generate-event apigateway http-api-proxy > base-http-api-proxy.json
    sam local generate-event apigateway aws-proxy --method POST --path predict > base-aws-proxy.json
Each route gets an HTTP API (2.0) and a REST (1.0) event, for `sam local invoke -e` or
`xlmr invoke --event`, from the route table and the task specs' samples.
Run: python events/make_events.py"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def samples() -> dict[str, tuple[str, str, Any]]:
    """event name -> (method, path, body): every route of the route table with its sample
    body; /predict once per task, with that task's spec sample."""
    from xlmr_serverless.aws_lambda.routes import ROUTES
    from xlmr_serverless.runtime.tasks import specs

    out: dict[str, tuple[str, str, Any]] = {}
    for r in ROUTES:
        if r.path == "/predict":
            for task, spec in specs().items():
                out[f"{r.name}-{task}"] = (r.method, r.path, dict(spec.sample))
        else:
            out[r.name] = (r.method, r.path, dict(r.sample) if r.sample else None)
    return out


def task_for(name: str) -> str:
    """A task whose bundle answers the event `name` (tests run each event on one)."""
    from xlmr_serverless.aws_lambda.routes import ROUTES
    from xlmr_serverless.runtime.tasks import specs

    if name.startswith("predict-"):
        return name[len("predict-"):]
    path = next(r.path for r in ROUTES if r.name == name)
    return next((t for t, s in specs().items() if path in s.routes), "feature-extraction")


def heads_for(name: str) -> tuple[str, ...]:
    """The extra heads the bundle answering the event `name` must have (its route's)."""
    from xlmr_serverless.aws_lambda.routes import ROUTES

    return next((r.heads for r in ROUTES if r.name == name), ())


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
    for old in HERE.glob("*-*.json"):
        if old.name.startswith(("http-", "rest-")):
            old.unlink()
    for name, (method, path, body) in samples().items():
        for kind, make, base in (("http", http_event, http_base), ("rest", rest_event, rest_base)):
            out = HERE / f"{kind}-{name}.json"
            out.write_text(json.dumps(make(base, method, path, body), indent=2, ensure_ascii=False) + "\n")
