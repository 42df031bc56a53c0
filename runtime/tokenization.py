"""The bundle's tokenizer.json through the Rust `tokenizers`, with transformers' call semantics:
truncation and padding are (re)set on every call, never taken from the file (pipelines.md §1.3),
and decode applies clean_up_tokenization_spaces when the checkpoint asks for it."""
from __future__ import annotations

import contextlib
import functools
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from tokenizers import Encoding, Tokenizer

from .errors import InvalidInputError
from .usage import record

_CLEANUPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
             (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def clean_up_tokenization(text: str) -> str:
    """transformers' clean_up_tokenization (tokenization_utils_base.py), in Python as there."""
    for old, new in _CLEANUPS:
        text = text.replace(old, new)
    return text


NORMALIZE_SLICE = 8192  # characters normalised at a time when a call's text is measured


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
        with self._truncating(truncation, max_length, stride, direction):
            t0 = time.perf_counter()
            try:
                return self.backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)
            except TypeError as exc:  # e.g. a lone surrogate: not text tokenizers can take
                raise InvalidInputError(f"inputs must be valid Unicode text ({exc})") from exc
            finally:
                record(tokenize_ms=(time.perf_counter() - t0) * 1000)

    def pieces(self, texts: Sequence[str]) -> list[Encoding]:
        """Each text tokenized once, whole, without special tokens: what the cost of a call is
        counted from before any pair or window is built (`pair_ids` builds pairs)."""
        return self.encode(texts, add_special_tokens=False)

    def pair_ids(self, firsts: Sequence[Encoding], seconds: Sequence[Encoding],
                 truncation: str | None = None, max_length: int | None = None,
                 direction: str = "right") -> list[list[int]]:
        """The ids `encode` gives these text pairs, built from their `pieces` without
        tokenizing again: special tokens added and truncated. Ids only: offsets are not
        encode's where a post-processor trims them (byte-level BPE's has run twice)."""
        with self._truncating(truncation, max_length, 0, direction):
            return [self.backend.post_process(a, b).ids for a, b in zip(firsts, seconds)]

    @contextlib.contextmanager
    def _truncating(self, truncation: str | None, max_length: int | None, stride: int,
                    direction: str) -> Iterator[None]:
        """The tokenizer to ourselves, set as transformers sets it per call (no padding,
        truncation as asked); a truncation tokenizers cannot do is a 422 naming the rule."""
        with self._lock:
            self.backend.no_padding()
            if truncation and max_length:
                self.backend.enable_truncation(max_length, stride=stride, strategy=truncation,
                                               direction=direction)
            else:
                self.backend.no_truncation()
            try:
                yield
            except InvalidInputError:
                raise
            except Exception as exc:  # tokenizers' truncation errors are plain Exceptions
                if "Truncation error" not in str(exc):
                    raise
                raise InvalidInputError(f"truncation {truncation} to {max_length} tokens cannot "
                                        f"be applied to these inputs: {truncation_rule(exc)}"
                                        ) from exc

    @functools.cached_property
    def longest_piece(self) -> int:
        """The longest piece of the vocabulary, in characters (16 for XLM-R's): what an answer
        that names any token is bounded by. Read once, on first use."""
        size = self.backend.get_vocab_size(with_added_tokens=True)
        return max(len(self.backend.id_to_token(i) or "") for i in range(size))

    def added_tokens(self, pair: bool = False) -> int:
        """Special tokens the template adds to one text (or to a pair): 2 and 4 for XLM-R."""
        return int(self.backend.num_special_tokens_to_add(pair))

    def normalized_chars(self, texts: Sequence[str], stop_above: int | None = None) -> int:
        """Characters the texts become under the tokenizer's normalizer (NFKC can make 18 of
        one), counted a slice at a time so that counting costs little memory, and stopping as
        soon as the count passes `stop_above`. Slices can only count more than the whole text
        (compositions and space runs across a cut are not merged): a bound, never less."""
        normalizer, total = self.backend.normalizer, 0
        for text in texts:
            for start in range(0, len(text), NORMALIZE_SLICE):
                part = text[start:start + NORMALIZE_SLICE]
                try:
                    total += len(normalizer.normalize_str(part)) if normalizer else len(part)
                except UnicodeEncodeError as exc:  # a lone surrogate: not text
                    raise InvalidInputError(f"inputs must be valid Unicode text ({exc})") from exc
                if stop_above is not None and total > stop_above:
                    return total
        return total

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


def truncation_rule(exc: Exception) -> str:
    """What a tokenizers truncation error means, in the words of the parameters."""
    if "Second sequence not provided" in str(exc):
        return "only_second needs text pairs"
    if "too short" in str(exc):
        return ("the text it cuts is shorter than what must go (only_first cuts the first text, "
                "only_second the second; the other text and the special tokens must fit)")
    return str(exc)


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
