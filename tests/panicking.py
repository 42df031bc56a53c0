"""Test support: the image's handler with one failure planted, of the kind that passes every
`except Exception`: a /predict whose inputs are PANIC raises the PanicException a real
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
_predict = Service.predict


def predict(self: Service, body: Any) -> Any:
    if isinstance(body, dict) and body.get("inputs") == TRIGGER:
        raise PANIC
    return _predict(self, body)


Service.predict = predict  # type: ignore[method-assign]



def __getattr__(name: str) -> Any:
    """`handler`, awslambdaric's entry: the image's own, loaded on first use (so that `xlmr
    serve` can import this module for the patch alone)."""
    if name == "handler":
        from xlmr_serverless.aws_lambda.handler import handler

        return handler
    raise AttributeError(name)
