"""fill-mask, as transformers' pipelines/fill_mask.py; the bundle's head scores only the
<mask> rows, so one forward returns [masks, vocab]."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..budget import FLOAT_JSON_BYTES, INT_JSON_BYTES, piece_json_bytes, text_json_bytes
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


# a candidate's fixed part: {"score", "token", "token_str", "sequence"} and two numbers
CANDIDATE_BYTES = 64 + FLOAT_JSON_BYTES + INT_JSON_BYTES


class FillMaskPipeline(Pipeline):
    spec = SPEC

    def sanitize(self, params: dict[str, Any]) -> Options:
        tokenizer_kwargs = params.get("tokenizer_kwargs") or {}
        top_k = params.get("top_k", 5)
        self.budget.check_top_k(top_k)
        targets = params.get("targets")
        return {"top_k": min(top_k, self.bundle.output_width),  # never more than the vocabulary
                "targets": [targets] if isinstance(targets, str) else targets,
                "target_ids": None, "truncate": bool(tokenizer_kwargs.get("truncation"))}

    def preprocess(self, items: list[str], options: Options) -> list[Prepared]:
        if options["targets"] is not None:  # once the call's characters were counted
            options["target_ids"] = self.target_ids(options["targets"])
        encs = self.tokenizer.encode(items, truncation="longest_first" if options["truncate"]
                                     else None, max_length=self.manifest.max_length)
        mask_id = self.bundle.specials["mask"]
        for text, e in zip(items, encs):
            if mask_id not in e.ids:
                token = self.manifest.special_tokens["mask"]["token"]
                raise InvalidInputError(f"No mask_token ({token}) found on the input: {text[:80]!r}")
        return [Prepared([e.ids], np.array(e.ids)) for e in encs]

    def texts(self, items: list[str], options: Options) -> list[str]:
        return [*items, *(options["targets"] or [])]

    def answer_bytes(self, prepared: Prepared, options: Options) -> int:
        """Every candidate carries the whole sequence back: masks x top_k x (the input's
        pieces and the longest piece of the vocabulary, decoded, as JSON)."""
        masks = int((prepared.context == self.bundle.specials["mask"]).sum())
        longest = self.tokenizer.longest_piece
        pieces = [self.tokenizer.id_to_token(int(i)) or "" for i in prepared.context]
        candidate = CANDIDATE_BYTES + text_json_bytes(longest + 1) + \
            piece_json_bytes(pieces) + text_json_bytes(longest + 1)
        return masks * options["top_k"] * candidate

    def collate(self, results: list[Any], shape: Any, options: Options) -> Any:
        """As the pipeline: a one-item list answers like a single input."""
        return results if shape and len(results) > 1 else results[0]

    def target_ids(self, targets: list[str]) -> np.ndarray:
        """Exact vocabulary hits first, else the first piece of the target's tokenization
        (the others tokenized together, once); deduplicated with set() as the pipeline does."""
        ids = []
        unknown = []
        for target in dict.fromkeys(targets):
            i = self.tokenizer.token_to_id(target)
            if i is None:
                unknown.append(target)
            else:
                ids.append(i)
        ids += [e.ids[0] for e in self.tokenizer.pieces(unknown) if e.ids]
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
        single_mask = len(masked_index) == 1
        pad = self.bundle.pad_id
        result = []
        for i, row_scores in enumerate(scores):  # a row at a time: [masks, vocab] is large
            row_probs = softmax(row_scores.astype(np.float32, copy=False))
            if target_ids is not None:
                row_probs = row_probs[target_ids]
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
