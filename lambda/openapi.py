"""The API as one OpenAPI 3.1 document, built from the route table (each route's view, summary
and body schemas, lambda/schemas.py) and each task's parameter schema from its spec. Served at
GET /openapi.json (with the served task's parameters), committed as openapi.json (any
task's), and held to the code by schemathesis."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from .. import __version__
from ..runtime.parameters import object_schema
from ..runtime.tasks import specs
from .schemas import ERROR, OPENAI_ERROR, PARAMETERS, Schema

if TYPE_CHECKING:
    from .routes import Route

ERRORS = {"400": "bad JSON, an empty body or an empty input",
          "413": "a body over XLMR_MAX_BODY_BYTES, or a request over a cost limit (XLMR_MAX_TOKENS, "
                 "XLMR_MAX_RESPONSE_BYTES)", "422": "a body the route cannot serve",
          "424": "TEI's answer where the bundle cannot serve the route (another task, or "
                 "without the head it needs)",
          "500": "an internal error (the request id is in the message and the log)",
          "503": "the model is unavailable (it failed to load: the log says why)"}
ERROR_SCHEMAS = {"hf": "Error", "tei": "Error", "openai": "OpenAIError"}


def json_content(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def published(schema: Any) -> Any:
    """A request schema as the document shows it: the task's parameters by reference."""
    if schema is PARAMETERS:
        return {"$ref": "#/components/schemas/Parameters"}
    if isinstance(schema, dict):
        return {k: published(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [published(v) for v in schema]
    return schema


def operation(r: Route) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": r.view.__name__, "summary": r.summary, "responses": {
        "200": {"description": "the answer", "content": json_content(r.answer)}}}
    for code in r.also:
        op["responses"][str(code)] = {"description": ERRORS[str(code)],
                                      "content": json_content(r.answer)}
    if r.needs_model:
        ref = {"$ref": f"#/components/schemas/{ERROR_SCHEMAS[r.errors]}"}
        op["responses"].update({code: {"description": why, "content": json_content(ref)}
                                for code, why in ERRORS.items()
                                if (r.method == "POST" or code in ("500", "503")) and
                                (code != "424" or (r.errors == "tei" and not r.any_task))})
    if r.request is not None:
        op["requestBody"] = {"required": True, "content": json_content(published(r.request))}
    return op


def parameters_schema(task: str | None) -> Schema:
    """/predict's `parameters`: the served task's schema, or (no task known) any task's."""
    if task is not None:
        return {"description": f"{task}'s parameters",
                **object_schema(specs()[task].parameters)}
    return {"description": "the task's parameters (the served task's schema is at "
                           "GET /openapi.json)",
            "anyOf": [{"title": name, **object_schema(spec.parameters)}
                      for name, spec in specs().items()]}


def document(routes: Iterable[Route], task: str | None = None) -> dict[str, Any]:
    """The whole API, one operation per route; `parameters` as `task` takes them (as any
    task does when None)."""
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        paths.setdefault(r.path, {})[r.method.lower()] = operation(r)
    return {"openapi": "3.1.0",
            "info": {"title": "xlmr-serverless", "version": __version__,
                     "description": "XLM-RoBERTa / RoBERTa ONNX bundles behind one HTTP API: "
                                    "the Hugging Face inference schema, Text Embeddings "
                                    "Inference's routes and OpenAI's embeddings."},
            "paths": paths,
            "components": {"schemas": {"Error": ERROR, "OpenAIError": OPENAI_ERROR,
                                       "Parameters": parameters_schema(task)}}}


if __name__ == "__main__":  # python -m xlmr_serverless.aws_lambda.openapi > openapi.json
    import json

    from .routes import openapi_document

    print(json.dumps(openapi_document(), indent=2, ensure_ascii=False))
