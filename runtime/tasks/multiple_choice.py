"""multiple-choice (no transformers pipeline exists): a prompt and N choices, each row
`<s> prompt </s></s> choice </s>`, padded together, scored as [1, N] logits (optimum's
input layout); returns the softmax over choices and the best one."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..budget import FLOAT_JSON_BYTES, INT_JSON_BYTES, text_json_bytes
from ..errors import InvalidInputError
from ..ops import softmax
from ..parameters import BOOL, nullable
from ..pipeline import Options, Pipeline, Prepared, RowOutputs, as_item_list
from ..tokenization import pad_batch
from .spec import TaskSpec, logits

SPEC = TaskSpec(
    name="multiple-choice", auto_class="AutoModelForMultipleChoice", head="ForMultipleChoice",
    inputs=("batch", "choices", "sequence"), outputs=logits("batch", "choices"), parity="row",
    truncation={"truncation": True},
    sample={"inputs": {"prompt": "Where is the Eiffel tower?", "choices": ["In Paris.", "In Rome."]}},
    parameters={"truncation": nullable(BOOL)},
    optimum_class="ORTModelForMultipleChoice")


class MultipleChoicePipeline(Pipeline):
    spec = SPEC

    def sanitize(self, params: dict[str, Any]) -> Options:
        return {"truncate": bool(params.get("truncation"))}

    def split_inputs(self, inputs: Any, options: Options) -> tuple[list[Any], Any]:
        items, was_list = as_item_list(inputs)
        return [self.parse(x) for x in items], was_list

    @staticmethod
    def parse(item: Any) -> tuple[str, list[str]]:
        if not isinstance(item, dict):
            raise InvalidInputError('multiple-choice inputs are {"prompt": str, "choices": [str, ...]}')
        prompt = item.get("prompt", item.get("question"))
        choices = item.get("choices")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidInputError("multiple-choice needs a non-empty prompt")
        if not isinstance(choices, list) or len(choices) < 2 or \
                not all(isinstance(c, str) for c in choices):
            raise InvalidInputError("multiple-choice needs a list of at least two string choices")
        return prompt, choices

    def texts(self, items: list[Any], options: Options) -> list[str]:
        return [t for prompt, choices in items for t in (prompt, *choices)]

    def preprocess(self, items: list[Any], options: Options) -> list[Prepared]:
        """A row per (prompt, choice), built from one tokenization of each text once the
        rows' tokens were counted."""
        added, limit = self.tokenizer.added_tokens(pair=True), self.manifest.max_length
        cap = limit if options["truncate"] else 1 << 62
        pieces = [self.tokenizer.pieces([prompt, *choices]) for prompt, choices in items]
        self.budget.check_tokens(sum(min(len(p.ids) + len(c.ids) + added, cap)
                                     for p, *cs in pieces for c in cs),
                                 f"{len(items)} prompt(s) with their choices")
        prepared = []
        for (_, choices), (p, *cs) in zip(items, pieces):
            rows = self.tokenizer.pair_ids([p] * len(cs), cs, max_length=limit,
                                           truncation="longest_first" if options["truncate"]
                                           else None)
            prepared.append(Prepared(rows, choices))
        return prepared

    def answer_bytes(self, prepared: Prepared, options: Options) -> int:
        """The best choice's text, and a probability and a logit per choice."""
        choices = prepared.context
        return 64 + INT_JSON_BYTES + text_json_bytes(max(len(c) for c in choices)) + \
            2 * FLOAT_JSON_BYTES * len(choices)

    def forward(self, prepared: list[Prepared]) -> list[list[RowOutputs]]:
        """An item's choices go through together, as one [1, choices, seq] example."""
        grouped = []
        for p in prepared:
            for row in p.rows:
                self.bundle.check_length(len(row))
            ids, mask = pad_batch(p.rows, self.bundle.pad_id)
            grouped.append([self.bundle.run(ids[None], mask[None])])
        return grouped

    def postprocess(self, prepared: Prepared, outputs: list[RowOutputs], options: Options) -> Any:
        choices = prepared.context
        scores = outputs[0][0][0].astype(np.float32)
        probs = softmax(scores)
        best = int(probs.argmax())
        return {"answer": choices[best], "index": best, "scores": probs.tolist(),
                "logits": scores.tolist()}
