"""A task's parameters as JSON Schema: the few shapes the task specs use, and the check every
call runs before any work. One schema per task, in its spec; the OpenAPI document publishes the
same object, so what the document promises is what the pipeline accepts."""
from __future__ import annotations

import json
from typing import Any, Callable, Mapping

from .errors import InvalidInputError

Schema = dict[str, Any]

BOOL: Schema = {"type": "boolean"}
POSITIVE_INT: Schema = {"type": "integer", "minimum": 1}
TEXT: Schema = {"type": "string"}
TEXTS: Schema = {"type": "array", "items": TEXT}


def nullable(schema: Schema) -> Schema:
    """The schema, or null (a pipeline's 'not given': its default applies). A typed schema
    takes null among its types (its errors then name the rule broken, not 'anyOf')."""
    if isinstance(schema.get("type"), str):
        extra = {"enum": [*schema["enum"], None]} if "enum" in schema else {}
        return {**schema, "type": [schema["type"], "null"], **extra}
    return {"anyOf": [*schema.get("anyOf", [schema]), {"type": "null"}]}


def either(*schemas: Schema) -> Schema:
    return {"anyOf": list(schemas)}


def choice(*values: str) -> Schema:
    """One of the values, in lower or upper case (the pipelines upper-case such names)."""
    return {"type": "string", "enum": [*values, *(v.upper() for v in values)]}


def kwargs(**properties: Schema) -> Schema:
    """A tokenizer-kwargs object: only the keys this runtime honours (others are an error,
    never silently ignored)."""
    return nullable({"type": "object", "properties": properties, "additionalProperties": False})


def object_schema(parameters: Mapping[str, Schema]) -> Schema:
    """The `parameters` object of a request to this task."""
    return {"type": "object", "properties": dict(parameters), "additionalProperties": False}


_VALIDATORS: dict[str, Callable[[Any], Any]] = {}  # task name -> compiled schema


def check(task: str, parameters: Mapping[str, Schema], params: Mapping[str, Any]) -> None:
    """Raise InvalidInputError (422) naming the parameter, the rule and the value when `params`
    does not match the task's schema; unknown names are listed with the allowed ones."""
    unknown = sorted(set(params) - set(parameters))
    if unknown:
        allowed = ", ".join(sorted(parameters)) or "none"
        raise InvalidInputError(f"unknown parameter(s) {', '.join(unknown)} for {task}; "
                                f"allowed: {allowed}")
    if not params:
        return
    import fastjsonschema  # compiled once per task, on its first call with parameters

    if task not in _VALIDATORS:
        _VALIDATORS[task] = fastjsonschema.compile(object_schema(parameters))
    try:
        _VALIDATORS[task](dict(params))
    except fastjsonschema.JsonSchemaValueException as e:
        where = e.name.removeprefix("data.") if e.name and e.name != "data" else "parameters"
        rule = e.message.removeprefix(e.name or "").strip()
        if e.rule == "anyOf":  # the library's words say nothing of what was wanted
            rule = f"must match {_short(e.definition)}"
        raise InvalidInputError(f"parameter {where} {rule}, got {_short(e.value)}") from None


def _short(value: Any, limit: int = 300) -> str:
    """JSON, cut to a log-friendly length (the value may be a caller's megabyte)."""
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= limit else text[:limit] + "..."
