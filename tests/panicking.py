"""Test support: the image's handler with one failure planted, of the kind that passes every
`except Exception`: a /predict (or direct invocation) whose inputs are PANIC raises the PanicException a real
tokenizers panic raises (pyo3's, a BaseException). awslambdaric runs `tests.panicking.handler`
and `xlmr serve` runs with this module imported, to show the process serves on after it."""
from __future__ import annotations

from typing import Any

from tokenizers import Tokenizer, models, pre_tokenizers

from xlmr_serverless.aws_lambda.service import Service

TRIGGER = "PANIC"


def real_panic() -> BaseException:
    """The exception tokenizers raises when its Rust code panics (a stride it cannot take)."""
    tok = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.enable_truncation(2, stride=2)
    try:
        tok.encode("a a a a")
    except BaseException as exc:  # noqa: B036 - the point: it is no Exception
        return exc
    raise AssertionError("tokenizers did not panic")


PANIC = real_panic()
assert not isinstance(PANIC, Exception), type(PANIC).__mro__
_answer = Service.answer


def answer(self: Service, route: Any, body: Any) -> Any:
    if route.path == "/predict" and isinstance(body, dict) and body.get("inputs") == TRIGGER:
        raise PANIC
    return _answer(self, route, body)


Service.answer = answer  # type: ignore[method-assign]



def __getattr__(name: str) -> Any:
    """`handler`, awslambdaric's entry: the image's own, loaded on first use (so that `xlmr
    serve` can import this module for the patch alone)."""
    if name == "handler":
        from xlmr_serverless.aws_lambda.handler import handler

        return handler
    raise AttributeError(name)
