"""A task's parameters as JSON Schema: the few shapes the task specs use, and the check every
call runs before any work. One schema per task, in its spec; the OpenAPI document publishes the
same object, so what the document promises is what the pipeline accepts."""
from __future__ import annotations

import json
from typing import Any, Callable, Mapping

from .errors import InvalidInputError

Schema = dict[str, Any]

# every number a parameter takes is bounded in its schema (and so in the OpenAPI document);
# the bundle's own limits (positions, vocabulary, the budget) are checked after, by the task
MAX_COUNT = 1_000_000  # above every vocabulary size and sequence length a bundle has

BOOL: Schema = {"type": "boolean"}
POSITIVE_INT: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_COUNT}
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


_COMPILED: dict[int, tuple[Schema, Callable[[Any], Any]]] = {}  # id(schema) -> validator


def violation(schema: Schema, value: Any, where: str = "the body") -> str | None:
    """None when `value` matches `schema`, else one line naming the field, the rule broken
    and the value (cut short): the words of every 422 a schema gives, in parameters and
    request bodies alike. Compiled once per schema object (the schemas are constants)."""
    import fastjsonschema  # on the first check, not at import: docs/design/request-schemas.md

    if id(schema) not in _COMPILED:
        _COMPILED[id(schema)] = schema, fastjsonschema.compile(schema)
    try:
        _COMPILED[id(schema)][1](value)
    except fastjsonschema.JsonSchemaValueException as e:
        return _words(e, where)
    return None


def _words(e: Any, where: str) -> str:
    name = e.name.removeprefix("data").removeprefix(".") if e.name else ""
    field = name or where
    if e.rule == "additionalProperties" and isinstance(e.value, dict):
        allowed = sorted(e.definition.get("properties", {}))
        unknown = sorted(set(e.value) - set(allowed))
        return (f"{field}: unknown field(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(allowed) or 'none'}")
    if e.rule == "required":
        missing = [k for k in e.definition.get("required", []) if k not in e.value]
        return f"{field} needs {', '.join(missing)}"
    rule = e.message.removeprefix(e.name or "").strip()
    if e.rule in ("anyOf", "oneOf"):  # the library's words say nothing of what was wanted
        wanted = e.definition.get("description") or f"match {_short(e.definition)}"
        rule = f"must be {wanted}" if "description" in e.definition else f"must {wanted}"
    return f"{field} {rule}, got {_short(e.value)}"


def check(task: str, parameters: Mapping[str, Schema], params: Mapping[str, Any]) -> dict[str, Any]:
    """`params` as the schema declares them (an integer parameter given as 2.0 is the int 2);
    InvalidInputError (422) naming the parameter, the rule and the value when they do not
    match the task's schema; unknown names are listed with the allowed ones."""
    unknown = sorted(set(params) - set(parameters))
    if unknown:
        allowed = ", ".join(sorted(parameters)) or "none"
        raise InvalidInputError(f"unknown parameter(s) {', '.join(unknown)} for {task}; "
                                f"allowed: {allowed}")
    if not params:
        return {}
    if task not in _SCHEMAS:
        _SCHEMAS[task] = object_schema(parameters)
    wrong = violation(_SCHEMAS[task], dict(params), "parameters")
    if wrong:  # (unknown names were refused above: every violation names a parameter)
        raise InvalidInputError(f"parameter {wrong}")
    return {name: as_declared(parameters[name], value) for name, value in params.items()}


_SCHEMAS: dict[str, Schema] = {}  # task name -> its parameters object


def as_declared(schema: Schema, value: Any) -> Any:
    """A valid value with its integers as int: JSON Schema's integer takes 2.0, which would
    reach slices, numpy and tokenizers as a float."""
    if isinstance(value, float) and value.is_integer() and _allows_integer(schema):
        return int(value)
    if isinstance(value, dict):
        props = next((s.get("properties") for s in _alternatives(schema) if "properties" in s), None)
        if props:
            return {k: as_declared(props[k], v) if k in props else v for k, v in value.items()}
    if isinstance(value, list):
        items = next((s["items"] for s in _alternatives(schema) if "items" in s), None)
        if items is not None:
            return [as_declared(items, v) for v in value]
    return value


def _alternatives(schema: Schema) -> list[Schema]:
    return [schema, *(s for alt in schema.get("anyOf", []) for s in _alternatives(alt))]


def _allows_integer(schema: Schema) -> bool:
    for s in _alternatives(schema):
        kind = s.get("type")
        if kind == "integer" or isinstance(kind, list) and "integer" in kind:
            return True
    return False


def _short(value: Any, limit: int = 300) -> str:
    """JSON, cut to a log-friendly length (the value may be a caller's megabyte)."""
    text = json.dumps(value, ensure_ascii=False, default=repr)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escaped, or the answer is not UTF-8
        text = json.dumps(value, default=repr)
    return text if len(text) <= limit else text[:limit] + "..."
