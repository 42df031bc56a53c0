"""What every task shares: parameter checking and the bundle it runs on. Each task module
keeps transformers' stage names (sanitize -> preprocess -> forward -> postprocess)."""
from __future__ import annotations

from typing import Any, ClassVar, Iterable

from .bundle import Bundle
from .errors import EmptyInputError, InvalidInputError


class Pipeline:
    """Base of the task pipelines: `pipe(inputs, **parameters)` as in transformers."""

    task: ClassVar[str]
    parameters: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, bundle: Bundle, batch_size: int = 16) -> None:
        self.bundle = bundle
        self.tokenizer = bundle.tokenizer
        self.manifest = bundle.manifest
        self.batch_size = batch_size

    @property
    def provider(self) -> str:
        return self.bundle.provider

    @property
    def precision(self) -> str:
        return self.bundle.precision

    def check_parameters(self, params: dict[str, Any]) -> None:
        unknown = sorted(set(params) - self.parameters)
        if unknown:
            allowed = ", ".join(sorted(self.parameters)) or "none"
            raise InvalidInputError(f"unknown parameter(s) {', '.join(unknown)} for {self.task}; "
                                    f"allowed: {allowed}")

    def __call__(self, inputs: Any, **params: Any) -> Any:
        raise NotImplementedError


def as_text_list(inputs: Any, what: str = "inputs") -> tuple[list[str], bool]:
    """(texts, was_list): a str or a non-empty list of str, anything else a clear error."""
    if isinstance(inputs, str):
        texts, was_list = [inputs], False
    elif isinstance(inputs, (list, tuple)):
        texts, was_list = list(inputs), True
    else:
        raise InvalidInputError(f"{what} must be a string or a list of strings, "
                                f"got {type(inputs).__name__}")
    if not texts:
        raise EmptyInputError(f"{what} is empty")
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise InvalidInputError(f"{what} must be strings, got {bad[0]}")
    return texts, was_list


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    return value


def optional_positive_int(name: str, value: Any) -> int | None:
    """None (meaning 'all', as the pipelines use it) or a positive integer."""
    return None if value is None else positive_int(name, value)


def one_of(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not isinstance(value, str) or value.lower() not in choices:
        raise InvalidInputError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value.lower()
