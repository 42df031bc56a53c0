"""fill-mask, as transformers' pipelines/fill_mask.py; the bundle's head scores only the
<mask> rows, so one forward returns [masks, vocab]."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..ops import softmax, top_k_indices
from ..parameters import BOOL, POSITIVE_INT, TEXT, TEXTS, either, kwargs, nullable
from ..pipeline import Options, Pipeline, Prepared, RowOutputs
from .spec import TaskSpec, logits

SPEC = TaskSpec(
    name="fill-mask", auto_class="AutoModelForMaskedLM", head="ForMaskedLM",
    outputs=logits("masks", None), graph="mask_rows", parity="topk",
    truncation={"tokenizer_kwargs": {"truncation": True}},
    sample={"inputs": "Paris is the <mask> of France.", "parameters": {"top_k": 3}},
    parameters={"top_k": POSITIVE_INT, "targets": nullable(either(TEXT, TEXTS)),
                "tokenizer_kwargs": kwargs(truncation=BOOL)},
    optimum_class="ORTModelForMaskedLM")


class FillMaskPipeline(Pipeline):
    spec = SPEC

    def sanitize(self, params: dict[str, Any]) -> Options:
        tokenizer_kwargs = params.get("tokenizer_kwargs") or {}
        top_k = params.get("top_k", 5)
        self.budget.check_top_k(top_k)
        return {"top_k": min(top_k, self.bundle.output_width),  # never more than the vocabulary
                "target_ids": self.target_ids(params["targets"])
                if params.get("targets") is not None else None,
                "truncate": bool(tokenizer_kwargs.get("truncation"))}

    def preprocess(self, items: list[str], options: Options) -> list[Prepared]:
        encs = self.tokenizer.encode(items, truncation="longest_first" if options["truncate"]
                                     else None, max_length=self.manifest.max_length)
        mask_id = self.bundle.specials["mask"]
        for text, e in zip(items, encs):
            if mask_id not in e.ids:
                token = self.manifest.special_tokens["mask"]["token"]
                raise InvalidInputError(f"No mask_token ({token}) found on the input: {text[:80]!r}")
        return [Prepared([e.ids], np.array(e.ids)) for e in encs]

    def answer_bytes(self, prepared: Prepared, options: Options) -> int:
        """Every candidate carries the whole sequence back: masks x top_k x the text."""
        masks = int((prepared.context == self.bundle.specials["mask"]).sum())
        return masks * options["top_k"] * (100 + 6 * len(prepared.context))

    def collate(self, results: list[Any], shape: Any, options: Options) -> Any:
        """As the pipeline: a one-item list answers like a single input."""
        return results if shape and len(results) > 1 else results[0]

    def target_ids(self, targets: Any) -> np.ndarray:
        """Exact vocabulary hits first, else the first piece of the target's tokenization;
        deduplicated with set() as the pipeline does."""
        if isinstance(targets, str):
            targets = [targets]
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

    def postprocess(self, prepared: Prepared, outputs: list[RowOutputs],
                    options: Options) -> list[Any]:
        input_ids, scores = prepared.context, outputs[0][0]
        top_k, target_ids = options["top_k"], options["target_ids"]
        if target_ids is not None:
            top_k = min(top_k, len(target_ids))
        masked_index = np.nonzero(input_ids == self.bundle.specials["mask"])[0]
        probs = softmax(scores.astype(np.float32))
        if target_ids is not None:
            probs = probs[..., target_ids]
        single_mask = len(masked_index) == 1
        pad = self.bundle.pad_id
        result = []
        for i, row_probs in enumerate(probs):
            order = top_k_indices(row_probs, top_k)
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
