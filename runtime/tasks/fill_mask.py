"""fill-mask, as transformers' pipelines/fill_mask.py; the bundle's head scores only the
<mask> rows, so one forward returns [masks, vocab]."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..ops import softmax
from ..pipeline import Pipeline, as_text_list, positive_int


class FillMaskPipeline(Pipeline):
    task = "fill-mask"
    parameters = frozenset({"top_k", "targets", "tokenizer_kwargs"})

    def __call__(self, inputs: Any, **params: Any) -> Any:
        self.check_parameters(params)
        top_k = positive_int("top_k", params.get("top_k", 5))
        target_ids = self.target_ids(params["targets"]) if params.get("targets") is not None else None
        truncate = bool((params.get("tokenizer_kwargs") or {}).get("truncation"))
        texts, was_list = as_text_list(inputs)
        rows = self.preprocess(texts, truncate)
        outs = self.bundle.run_rows(rows, self.batch_size, layout="mask")
        results = [self.postprocess(np.array(r), o[0], top_k, target_ids) for r, o in zip(rows, outs)]
        return results if was_list and len(results) > 1 else results[0]

    def preprocess(self, texts: list[str], truncate: bool) -> list[list[int]]:
        encs = self.tokenizer.encode(texts, truncation="longest_first" if truncate else None,
                                     max_length=self.manifest.max_length)
        mask_id = self.bundle.specials["mask"]
        for text, e in zip(texts, encs):
            if mask_id not in e.ids:
                token = self.manifest.special_tokens["mask"]["token"]
                raise InvalidInputError(f"No mask_token ({token}) found on the input: {text[:80]!r}")
        return [e.ids for e in encs]

    def target_ids(self, targets: Any) -> np.ndarray:
        """Exact vocabulary hits first, else the first piece of the target's tokenization;
        deduplicated with set() as the pipeline does."""
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise InvalidInputError("targets must be a string or a list of strings")
        vocab = self.tokenizer.vocab()
        ids = []
        for target in targets:
            i = vocab.get(target)
            if i is None:
                pieces = self.tokenizer.encode([target], add_special_tokens=False)[0].ids
                if not pieces:
                    continue
                i = pieces[0]
            ids.append(i)
        ids = list(set(ids))
        if not ids:
            raise InvalidInputError("At least one target must be provided when passed.")
        return np.array(ids)

    def postprocess(self, input_ids: np.ndarray, logits: np.ndarray, top_k: int,
                    target_ids: np.ndarray | None) -> list[Any]:
        if target_ids is not None:
            top_k = min(top_k, len(target_ids))
        masked_index = np.nonzero(input_ids == self.bundle.specials["mask"])[0]
        probs = softmax(logits.astype(np.float32))
        if target_ids is not None:
            probs = probs[..., target_ids]
        single_mask = len(masked_index) == 1
        pad = self.bundle.pad_id
        result = []
        for i, row_probs in enumerate(probs):
            order = np.argsort(-row_probs, kind="stable")[:top_k]
            row = []
            for p in order:
                token = int(target_ids[p]) if target_ids is not None else int(p)
                tokens = input_ids.copy()
                tokens[masked_index[i]] = token
                tokens = tokens[tokens != pad]
                row.append({"score": float(row_probs[p]), "token": token,
                            "token_str": self.tokenizer.decode([token]),
                            "sequence": self.tokenizer.decode(tokens, skip_special_tokens=single_mask)})
            result.append(row)
        return result[0] if single_mask else result
