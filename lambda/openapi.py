"""The API as one OpenAPI 3.1 document, generated from the route table, the request and
response schemas below (JSON Schema 2020-12, as OpenAPI 3.1 uses it) and each task's parameter
schema from its spec. Served at GET /openapi.json (with the served task's parameters),
committed as openapi.json (any task's), and held to the code by schemathesis."""
from __future__ import annotations

from functools import cache
from typing import Any

from .. import __version__
from ..runtime.parameters import object_schema
from ..runtime.tasks import specs
from .routes import ROUTES, Route

STRINGS = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"},
                                           "minItems": 1}]}
BOOL = {"type": "boolean"}
DIRECTION = {"type": "string", "enum": ["Right", "Left", "right", "left"]}
NUMBERS = {"type": "array", "items": {"type": "number"}}

REQUESTS: dict[str, dict[str, Any]] = {
    "predict": {
        "type": "object", "required": ["inputs"], "additionalProperties": False,
        "properties": {
            "inputs": {"description": "a text, a list of texts, or the task's object "
                                      "({question, context}, {text, text_pair}, ...)"},
            "parameters": {"$ref": "#/components/schemas/Parameters"},
            "truncate": BOOL, "truncation": BOOL, "truncation_direction": DIRECTION,
            "raw_scores": BOOL}},
    "embed": {
        "type": "object", "required": ["inputs"], "additionalProperties": False,
        "properties": {"inputs": STRINGS, "normalize": BOOL, "truncate": BOOL, "truncation": BOOL,
                       "truncation_direction": DIRECTION, "prompt_name": {"type": "null"}}},
    "openai_embeddings": {
        "type": "object", "required": ["input"], "additionalProperties": False,
        "properties": {"input": STRINGS, "model": {"type": "string"},
                       "encoding_format": {"type": "string", "enum": ["float", "base64"]},
                       "dimensions": {"type": "integer", "minimum": 1},
                       "user": {"type": "string"}, "truncate": BOOL}},
    "rerank": {
        "type": "object", "required": ["query", "texts"], "additionalProperties": False,
        "properties": {"query": {"type": "string", "minLength": 1}, "texts": STRINGS,
                       "truncate": BOOL, "truncation": BOOL, "raw_scores": BOOL,
                       "return_text": BOOL, "truncation_direction": DIRECTION}},
    "tokenize": {
        "type": "object", "required": ["inputs"], "additionalProperties": False,
        "properties": {"inputs": STRINGS, "add_special_tokens": BOOL,
                       "prompt_name": {"type": "null"}}},
}

TOKEN = {"type": "object", "required": ["id", "text", "special", "start", "stop"],
         "properties": {"id": {"type": "integer"}, "text": {"type": "string"},
                        "special": BOOL, "start": {"type": "integer"},
                        "stop": {"type": "integer"}}}
RESPONSES: dict[str, dict[str, Any]] = {
    "health": {"type": "object", "required": ["status"],
               "properties": {"status": {"type": "string", "enum": ["ok", "error"]}}},
    "info": {"type": "object", "required": ["model_id", "model_dtype", "model_type",
                                            "max_input_length", "max_client_batch_size"]},
    "openapi": {"type": "object", "required": ["openapi", "paths"]},
    "predict": {"description": "the task's answer, as the Hugging Face Inference API gives it"},
    "embed": {"type": "array", "items": NUMBERS},
    "openai_embeddings": {
        "type": "object", "required": ["object", "model", "data", "usage"],
        "properties": {"object": {"const": "list"}, "model": {"type": "string"},
                       "data": {"type": "array", "items": {
                           "type": "object", "required": ["object", "index", "embedding"],
                           "properties": {"object": {"const": "embedding"},
                                          "index": {"type": "integer"},
                                          "embedding": {"oneOf": [NUMBERS, {"type": "string"}]}}}},
                       "usage": {"type": "object",
                                 "required": ["prompt_tokens", "total_tokens"]}}},
    "rerank": {"type": "array", "items": {
        "type": "object", "required": ["index", "score"],
        "properties": {"index": {"type": "integer"}, "score": {"type": "number"},
                       "text": {"type": "string"}}}},
    "tokenize": {"type": "array", "items": {"type": "array", "items": TOKEN}},
}
ERROR = {"type": "object", "required": ["error", "type", "error_type"],
         "properties": {"error": {"type": "string"}, "type": {"type": "string"},
                        "error_type": {"type": "string"}}}
OPENAI_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type"],
    "properties": {"message": {"type": "string"}, "type": {"type": "string"}}}}}
ERRORS = {"400": "bad JSON, an empty body or an empty input",
          "413": "a body over XLMR_MAX_BODY_BYTES, or a request over a cost limit (XLMR_MAX_TOKENS, "
                 "XLMR_MAX_RESPONSE_BYTES)", "422": "a body the route cannot serve",
          "500": "an internal error (the request id is in the message and the log)",
          "503": "the model is unavailable (it failed to load: the log says why)"}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def operation(r: Route) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": r.view, "summary": r.summary, "responses": {
        "200": {"description": "the answer", "content": json_content(RESPONSES[r.view])}}}
    if r.view == "health":
        op["responses"]["503"] = {"description": "the model failed to load",
                                  "content": json_content(RESPONSES["health"])}
    elif r.view != "openapi":
        error = "OpenAIError" if r.path.startswith("/v1/") else "Error"
        op["responses"].update({code: {"description": why, "content": json_content(
            {"$ref": f"#/components/schemas/{error}"})} for code, why in ERRORS.items()
            if r.method == "POST" or code in ("500", "503")})
    if r.schema:
        op["requestBody"] = {"required": True, "content": json_content(REQUESTS[r.schema])}
    return op


@cache
def parameters_schema(task: str | None) -> dict[str, Any]:
    """/predict's `parameters`: the served task's schema, or (no task known) any task's."""
    if task is not None:
        return {"description": f"{task}'s parameters",
                **object_schema(specs()[task].parameters)}
    return {"description": "the task's parameters (the served task's schema is at "
                           "GET /openapi.json)",
            "anyOf": [{"title": name, **object_schema(spec.parameters)}
                      for name, spec in specs().items()]}


def openapi_document(task: str | None = None) -> dict[str, Any]:
    """The whole API, one operation per route of the route table; `parameters` as `task`
    takes them (as any task does when None)."""
    return _document(task)


@cache
def _document(task: str | None) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
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

    print(json.dumps(openapi_document(), indent=2, ensure_ascii=False))
