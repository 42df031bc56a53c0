"""feature-extraction as transformers returns it ([1, seq, hidden] per input, specials
included), and sentence embeddings as sentence-transformers computes them (strip, truncate to
max_seq_length, pool, normalize) through `embed` or the `pooling`/`normalize` parameters."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputTooLongError, InvalidInputError
from ..ops import l2_normalize, pool
from ..pipeline import Pipeline, as_text_list, one_of

POOLINGS = ("cls", "mean", "max")


class FeatureExtractionPipeline(Pipeline):
    task = "feature-extraction"
    parameters = frozenset({"truncation", "tokenize_kwargs", "return_tensors", "pooling",
                            "normalize"})

    def __call__(self, inputs: Any, **params: Any) -> Any:
        self.check_parameters(params)
        texts, was_list = as_text_list(inputs)
        if params.get("pooling") is not None or params.get("normalize") is not None:
            vectors = self.embed(texts, params.get("pooling"), params.get("normalize"),
                                 truncate=bool(params.get("truncation")))
            out: list[Any] = [v.tolist() for v in vectors]
            return out if was_list else out[0]
        kwargs = dict(params.get("tokenize_kwargs") or {})
        if "truncation" in params and "truncation" in kwargs:
            raise InvalidInputError("truncation given both as a parameter and in tokenize_kwargs")
        truncation = params.get("truncation", kwargs.get("truncation"))
        max_length = kwargs.get("max_length")
        strategy = "longest_first" if truncation is True or (max_length and truncation is None) \
            else truncation or None
        encs = self.tokenizer.encode(texts, truncation=strategy,
                                     max_length=min(max_length or self.manifest.max_length,
                                                    self.manifest.max_length))
        rows = self.bundle.run_rows([e.ids for e in encs], self.batch_size, "token")
        if params.get("return_tensors"):
            res: list[Any] = [r[0][None] for r in rows]
        else:
            res = [[r[0].tolist()] for r in rows]
        return res if was_list else res[0]

    @property
    def sentence_config(self) -> dict[str, Any]:
        return self.manifest.sentence_embedding or {"pooling": "cls", "normalize": False}

    def embed(self, texts: list[str], pooling: str | None = None, normalize: bool | None = None,
              truncate: bool = False) -> np.ndarray:
        """Sentence embeddings [n, dim], float32, in input order. Texts over the limit are an
        error unless `truncate` (the limit is sentence-transformers' max_seq_length)."""
        cfg = self.sentence_config
        mode = one_of("pooling", pooling or cfg["pooling"], POOLINGS)
        normalize = cfg["normalize"] if normalize is None else bool(normalize)
        limit = min(cfg.get("max_seq_length") or self.manifest.max_length, self.manifest.max_length)
        stripped = [t.strip() for t in texts]
        encs = self.tokenizer.encode(stripped, truncation="longest_first" if truncate else None,
                                     max_length=limit)
        for e in encs:
            if len(e.ids) > limit:
                raise InputTooLongError(f"inputs must have at most {limit} tokens. "
                                        f"Given: {len(e.ids)}")
        rows = self.bundle.run_rows([e.ids for e in encs], self.batch_size, "token")
        vecs = np.stack([pool(r[0][None], np.ones((1, len(r[0]))), mode)[0] for r in rows])
        return (l2_normalize(vecs) if normalize else vecs).astype(np.float32)

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self.tokenizer.encode([t.strip() for t in texts])]
