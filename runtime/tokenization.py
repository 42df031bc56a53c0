"""The bundle's tokenizer.json through the Rust `tokenizers`, with transformers' call semantics:
truncation and padding are (re)set on every call, never taken from the file (pipelines.md §1.3),
and decode applies clean_up_tokenization_spaces when the checkpoint asks for it."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tokenizers import Encoding, Tokenizer

from .errors import InvalidInputError

_CLEANUPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
             (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def clean_up_tokenization(text: str) -> str:
    """transformers' clean_up_tokenization (tokenization_utils_base.py), in Python as there."""
    for old, new in _CLEANUPS:
        text = text.replace(old, new)
    return text


class TextTokenizer:
    """Encode/decode with exactly the source model's tokenizer."""

    def __init__(self, path: Path, clean_up_spaces: bool = False) -> None:
        self.backend = Tokenizer.from_file(str(path))
        self.clean_up_spaces = clean_up_spaces
        self._lock = threading.Lock()
        model = self.backend.model
        self.continuing_subword_prefix = getattr(model, "continuing_subword_prefix", None)

    def encode(self, texts: Sequence[str | tuple[str, str]], truncation: str | None = None,
               max_length: int | None = None, stride: int = 0,
               add_special_tokens: bool = True, direction: str = "right") -> list[Encoding]:
        """Encode single texts or (text, pair) tuples; `truncation` is None (off) or a
        tokenizers strategy ('longest_first', 'only_first', 'only_second'), cutting on the
        right (the end) or, with `direction="left"`, the start (TEI's truncation_direction)."""
        with self._lock:
            self.backend.no_padding()
            if truncation and max_length:
                self.backend.enable_truncation(max_length, stride=stride, strategy=truncation,
                                               direction=direction)
            else:
                self.backend.no_truncation()
            try:
                return self.backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)
            except TypeError as exc:  # e.g. a lone surrogate: not text tokenizers can take
                raise InvalidInputError(f"inputs must be valid Unicode text ({exc})") from exc

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        text = self.backend.decode(list(map(int, ids)), skip_special_tokens=skip_special_tokens)
        return clean_up_tokenization(text) if self.clean_up_spaces else text

    def tokens_to_string(self, tokens: Sequence[str]) -> str:
        """convert_tokens_to_string of a fast tokenizer: the decoder alone, no clean-up."""
        decoder = self.backend.decoder
        return decoder.decode(list(tokens)) if decoder is not None else " ".join(tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self.backend.id_to_token(int(i))

    def vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """input_ids and attention_mask padded on the right to the longest row (never max length)."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        mask[i, :len(r)] = 1
    return ids, mask


def special_ids(specials: dict[str, Any]) -> dict[str, int]:
    """name -> id of the bundle's special tokens (mask, pad, cls, ...)."""
    return {k: int(v["id"]) for k, v in specials.items() if v.get("id") is not None}
