"""The cost model: what one call may cost, each part counted from the request before it is
paid. In order: the characters the tokenizer would read (its time and memory grow with
them), then, from one tokenization of each distinct text, the tokens every model row would
hold (pairs, candidate labels, choices and stride windows counted arithmetically, before
they are built), the numbers the graph returns (a fill-mask row is one vocabulary-wide row
per <mask>), and an upper bound of the answer's JSON. A public endpoint sets the limits (the
Lambda adapter reads them from its environment); the Python API has none unless given a
Budget. docs/limits.md is the table of what is counted, its default and its status."""
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

    max_input_chars: int | None = None  # characters tokenized, after normalisation
    max_tokens: int | None = None  # real tokens over every row the call would run
    max_output_values: int | None = None  # numbers the graph returns for the call
    max_top_k: int | None = None
    max_template_chars: int | None = None
    max_response_bytes: int | None = None  # the answer as JSON, bounded before running

    def check_chars(self, chars: int, what: str) -> None:
        if self.max_input_chars is not None and chars > self.max_input_chars:
            raise OverBudgetError(f"this request's texts are over {self.max_input_chars} "
                                  f"characters once normalised ({what}); the limit is "
                                  f"{self.max_input_chars} (max_input_chars)")

    def check_tokens(self, tokens: int, what: str) -> None:
        if self.max_tokens is not None and tokens > self.max_tokens:
            raise OverBudgetError(f"this request needs {tokens} tokens ({what}); the limit is "
                                  f"{self.max_tokens} (max_tokens)")

    def check_outputs(self, values: int, what: str) -> None:
        if self.max_output_values is not None and values > self.max_output_values:
            raise OverBudgetError(f"this request's model outputs hold {values} numbers ({what}); "
                                  f"the limit is {self.max_output_values} (max_output_values)")

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
            raise OverBudgetError(f"the answer would be up to {size / 1e6:.1f} MB ({what}); the "
                                  f"limit is {self.max_response_bytes / 1e6:.1f} MB "
                                  "(max_response_bytes)")


UNLIMITED = Budget()
FLOAT_JSON_BYTES = 26  # a float as JSON text, with its separator ("-1.2345678901234567e-05, ")
INT_JSON_BYTES = 12  # an id or offset as JSON, with its separator
CHAR_JSON_BYTES = 6  # a character of a JSON string at most (a \\u00XX escape)


def text_json_bytes(chars: int) -> int:
    """A string of `chars` characters as JSON, at most: every character escaped, and quotes."""
    return CHAR_JSON_BYTES * chars + 2


def piece_json_bytes(pieces: list[str]) -> int:
    """The decoded text of these vocabulary pieces as JSON, at most: a decoder gives each
    piece back as at most its own characters and one space (Metaspace's ▁, WordPiece's
    joining space; a byte-level piece's characters are one byte each)."""
    return text_json_bytes(sum(len(p) + 1 for p in pieces))
