"""What a block of work ran, counted where it happens: the characters the tokenizer read, the
time it took, the forward passes (real tokens, rows, time). The meter is per thread, so two
threads never mix their counts; logs, metrics, OpenAI's `usage` and TEI's response headers
read it."""
from __future__ import annotations

import contextlib
import dataclasses
import threading
from typing import Iterator

_current = threading.local()


@dataclasses.dataclass
class Usage:
    tokens: int = 0  # real (unpadded) tokens through the model
    rows: int = 0  # model rows
    chars: int = 0  # characters of the texts the tokenizer read
    tokenize_ms: float = 0.0
    inference_ms: float = 0.0

    def add(self, other: Usage) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@contextlib.contextmanager
def meter() -> Iterator[Usage]:
    """`with meter() as usage:` counts what this thread runs in the block (a block inside
    another counts for both)."""
    usage, outer = Usage(), getattr(_current, "usage", None)
    _current.usage = usage
    try:
        yield usage
    finally:
        _current.usage = outer
        if outer is not None:
            outer.add(usage)


def record(tokens: int = 0, rows: int = 0, chars: int = 0, tokenize_ms: float = 0.0,
           inference_ms: float = 0.0) -> None:
    """Count work into this thread's open meter (nothing when none is open)."""
    usage = getattr(_current, "usage", None)
    if usage is not None:
        usage.add(Usage(tokens, rows, chars, tokenize_ms, inference_ms))
