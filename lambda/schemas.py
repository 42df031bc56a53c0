"""Every request and response body of the HTTP API as JSON Schema (2020-12, as OpenAPI 3.1
uses it), declared once: the route table names them, the service validates requests against
them (lambda/service.py), and the OpenAPI document publishes them (lambda/openapi.py)."""
from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

TEXT: Schema = {"type": "string", "minLength": 1}
TEXTS: Schema = {"description": "a non-empty string or a non-empty list of non-empty strings",
                 "anyOf": [TEXT, {"type": "array", "items": TEXT, "minItems": 1}]}
# token ids, as TEI and OpenAI take them in place of a text
IDS: Schema = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
# TEI's Input (and OpenAI's `input`): a text, one input's token ids, or a list of either
INPUTS: Schema = {"description": "a non-empty string, a non-empty list of token ids, or a "
                                 "non-empty list of either",
                  "anyOf": [TEXT, IDS, {"type": "array", "items": {"anyOf": [TEXT, IDS]},
                                        "minItems": 1}]}
BOOL: Schema = {"type": "boolean"}
DIRECTION: Schema = {"type": "string", "enum": ["Right", "Left", "right", "left"]}
NUMBERS: Schema = {"type": "array", "items": {"type": "number"}}
# which prompts a bundle has is the bundle's: the schema takes a name, the service checks it
PROMPT_NAME: Schema = {"type": ["string", "null"]}
# the embedding's first dimensions, normalised after (the bundle's width bounds it)
DIMENSIONS: Schema = {"type": ["integer", "null"], "minimum": 1, "maximum": 1_000_000}
# the task's parameters: an object here; the pipeline holds it to the task's own schema
# (runtime/parameters.py), which the document publishes in this one's place
PARAMETERS: Schema = {"type": ["object", "null"]}

PREDICT: Schema = {
    "type": "object", "required": ["inputs"], "additionalProperties": False,
    "properties": {
        "inputs": {"description": "a text, a list of texts, or the task's object "
                                  "({question, context}, {text, text_pair}, ...)"},
        "parameters": PARAMETERS,
        "truncate": BOOL, "truncation": BOOL, "truncation_direction": DIRECTION,
        "raw_scores": BOOL}}
EMBED: Schema = {
    "type": "object", "required": ["inputs"], "additionalProperties": False,
    "properties": {"inputs": INPUTS, "normalize": BOOL, "truncate": BOOL, "truncation": BOOL,
                   "truncation_direction": DIRECTION, "prompt_name": PROMPT_NAME,
                   "dimensions": DIMENSIONS}}
EMBED_ALL: Schema = {
    "type": "object", "required": ["inputs"], "additionalProperties": False,
    "properties": {"inputs": INPUTS, "truncate": BOOL, "truncation": BOOL,
                   "truncation_direction": DIRECTION, "prompt_name": PROMPT_NAME}}
EMBED_SPARSE: Schema = EMBED_ALL  # TEI's EmbedSparseRequest has EmbedAllRequest's fields
OPENAI_EMBEDDINGS: Schema = {
    "type": "object", "required": ["input"], "additionalProperties": False,
    "properties": {"input": INPUTS, "model": {"type": "string"},
                   "encoding_format": {"type": "string", "enum": ["float", "base64"]},
                   "dimensions": DIMENSIONS,
                   "user": {"type": "string"}, "truncate": BOOL}}
RERANK: Schema = {
    "type": "object", "required": ["query", "texts"], "additionalProperties": False,
    "properties": {"query": TEXT, "texts": TEXTS, "truncate": BOOL, "truncation": BOOL,
                   "raw_scores": BOOL, "return_text": BOOL, "truncation_direction": DIRECTION}}
TOKENIZE: Schema = {
    "type": "object", "required": ["inputs"], "additionalProperties": False,
    "properties": {"inputs": TEXTS, "add_special_tokens": BOOL, "prompt_name": PROMPT_NAME}}

SIMILARITY: Schema = {
    "type": "object", "required": ["inputs"], "additionalProperties": False,
    "properties": {
        "inputs": {"type": "object", "required": ["source_sentence", "sentences"],
                   "additionalProperties": False,
                   "properties": {"source_sentence": TEXT,
                                  "sentences": {"type": "array", "items": TEXT}}},
        "parameters": {"type": ["object", "null"], "additionalProperties": False,
                       "properties": {"truncate": BOOL, "truncation_direction": DIRECTION,
                                      "prompt_name": PROMPT_NAME}}}}
# SageMaker's /invocations: the body of the bundle's natural route (checked against its schema)
INVOCATIONS: Schema = {"description": "the body of the bundle's natural route: /embed's for an "
                                      "embedding bundle, /predict's for the others",
                       "type": "object"}

TOKEN_IDS: Schema = {"type": "array", "items": {"type": "integer", "minimum": 0,
                                                "maximum": 1_000_000}}
DECODE: Schema = {
    "type": "object", "required": ["ids"], "additionalProperties": False,
    "properties": {"ids": {"description": "a list of token ids, or a non-empty list of them",
                           "anyOf": [TOKEN_IDS, {"type": "array", "items": TOKEN_IDS,
                                                 "minItems": 1}]},
                   "skip_special_tokens": BOOL}}

TOKEN: Schema = {"type": "object", "required": ["id", "text", "special", "start", "stop"],
                 "properties": {"id": {"type": "integer"}, "text": {"type": "string"},
                                "special": BOOL, "start": {"type": "integer"},
                                "stop": {"type": "integer"}}}
HEALTH_ANSWER: Schema = {"type": "object", "required": ["status"],
                         "properties": {"status": {"type": "string", "enum": ["ok", "error"]}}}
INFO_ANSWER: Schema = {"type": "object", "required": [
    "model_id", "model_dtype", "model_type", "max_input_length", "max_client_batch_size"]}
OPENAPI_ANSWER: Schema = {"type": "object", "required": ["openapi", "paths"]}
PREDICT_ANSWER: Schema = {
    "description": "the task's answer, as the Hugging Face Inference API gives it"}
EMBED_ANSWER: Schema = {"type": "array", "items": NUMBERS}
EMBED_ALL_ANSWER: Schema = {"type": "array", "items": {"type": "array", "items": NUMBERS}}
EMBED_SPARSE_ANSWER: Schema = {"type": "array", "items": {"type": "array", "items": {
    "type": "object", "required": ["index", "value"],
    "properties": {"index": {"type": "integer"}, "value": {"type": "number"}}}}}
OPENAI_EMBEDDINGS_ANSWER: Schema = {
    "type": "object", "required": ["object", "model", "data", "usage"],
    "properties": {"object": {"const": "list"}, "model": {"type": "string"},
                   "data": {"type": "array", "items": {
                       "type": "object", "required": ["object", "index", "embedding"],
                       "properties": {"object": {"const": "embedding"},
                                      "index": {"type": "integer"},
                                      "embedding": {"oneOf": [NUMBERS, {"type": "string"}]}}}},
                   "usage": {"type": "object", "required": ["prompt_tokens", "total_tokens"]}}}
RERANK_ANSWER: Schema = {"type": "array", "items": {
    "type": "object", "required": ["index", "score"],
    "properties": {"index": {"type": "integer"}, "score": {"type": "number"},
                   "text": {"type": "string"}}}}
SIMILARITY_ANSWER: Schema = {"type": "array", "items": {"type": "number"}}
INVOCATIONS_ANSWER: Schema = {"description": "the natural route's answer"}
DECODE_ANSWER: Schema = {"type": "array", "items": {"type": "string"}}
TOKENIZE_ANSWER: Schema = {"type": "array", "items": {"type": "array", "items": TOKEN}}

ERROR: Schema = {"type": "object", "required": ["error", "type", "error_type"],
                 "properties": {"error": {"type": "string"}, "type": {"type": "string"},
                                "error_type": {"type": "string"}}}
OPENAI_ERROR: Schema = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type"],
    "properties": {"message": {"type": "string"}, "type": {"type": "string"}}}}}
