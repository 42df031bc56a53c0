"""Pipeline answers as JSON-ready values: the pipelines return what transformers returns
(numpy scalars and arrays included); an HTTP layer needs plain lists and numbers."""
from __future__ import annotations

import base64
from typing import Any

import numpy as np


def vectors_as(vectors: np.ndarray, encoding: str) -> list[Any]:
    """Embeddings [n, dim] as lists of floats, or ("base64") each row's float32
    little-endian bytes in base64, as OpenAI's API sends them."""
    if encoding == "base64":
        rows = np.ascontiguousarray(vectors, dtype="<f4")
        return [base64.b64encode(r.tobytes()).decode("ascii") for r in rows]
    return [[float(x) for x in r] for r in vectors.astype(np.float32)]


def to_jsonable(obj: Any) -> Any:
    """Dicts, lists and tuples walked; numpy scalars -> Python numbers, arrays -> lists."""
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj
