"""What one call may cost, checked before the model runs: the tokens it would run (inputs,
pairs, candidate labels and stride windows counted alike), `top_k`, the zero-shot template's
length and the answer's size. A public endpoint sets these (the Lambda adapter reads them
from its environment); the Python API has no limits unless given a Budget."""
from __future__ import annotations

import dataclasses

from .errors import InvalidInputError


class OverBudgetError(InvalidInputError):
    """The request would cost more than a limit allows (HTTP 413): the message names the
    limit and the value the request needed."""

    status = 413
    error_type = "over_budget"


@dataclasses.dataclass(frozen=True)
class Budget:
    """Limits of one call; None means no limit."""

    max_tokens: int | None = None  # real tokens over every row the call would run
    max_top_k: int | None = None
    max_template_chars: int | None = None
    max_response_bytes: int | None = None  # the answer as JSON, estimated before running

    def check_tokens(self, tokens: int, what: str) -> None:
        if self.max_tokens is not None and tokens > self.max_tokens:
            raise OverBudgetError(f"this request needs {tokens} tokens ({what}); the limit is "
                                  f"{self.max_tokens} (max_tokens)")

    def check_top_k(self, top_k: int) -> None:
        if self.max_top_k is not None and top_k > self.max_top_k:
            raise InvalidInputError(f"top_k must be at most {self.max_top_k} (max_top_k). "
                                    f"Given: {top_k}")

    def check_template(self, template: str) -> None:
        if self.max_template_chars is not None and len(template) > self.max_template_chars:
            raise InvalidInputError(f"hypothesis_template must be at most "
                                    f"{self.max_template_chars} characters "
                                    f"(max_template_chars). Given: {len(template)}")

    def check_response(self, size: int, what: str) -> None:
        if self.max_response_bytes is not None and size > self.max_response_bytes:
            raise OverBudgetError(f"the answer would be about {size / 1e6:.1f} MB ({what}); the "
                                  f"limit is {self.max_response_bytes / 1e6:.1f} MB "
                                  "(max_response_bytes)")


UNLIMITED = Budget()
FLOAT_JSON_BYTES = 12  # a float32 as JSON text, with its separator ("-0.01234567, ")
