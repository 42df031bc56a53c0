"""Pipeline answers as JSON-ready values: the pipelines return what transformers returns
(numpy scalars and arrays included); an HTTP layer needs plain lists and numbers."""
from __future__ import annotations

from typing import Any

import numpy as np


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
