"""multiple-choice (no transformers pipeline exists): a prompt and N choices, each row
`<s> prompt </s></s> choice </s>`, padded together, scored as [1, N] logits (optimum's
input layout); returns the softmax over choices and the best one."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import EmptyInputError, InvalidInputError
from ..ops import softmax
from ..pipeline import Pipeline
from ..tokenization import pad_batch


class MultipleChoicePipeline(Pipeline):
    task = "multiple-choice"
    parameters = frozenset({"truncation"})

    def __call__(self, inputs: Any, **params: Any) -> Any:
        self.check_parameters(params)
        items = inputs if isinstance(inputs, list) else [inputs]
        if not items:
            raise EmptyInputError("inputs is empty")
        results = [self.score(*self.parse(x), truncate=bool(params.get("truncation"))) for x in items]
        return results if isinstance(inputs, list) else results[0]

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

    def score(self, prompt: str, choices: list[str], truncate: bool) -> dict[str, Any]:
        encs = self.tokenizer.encode([(prompt, c) for c in choices],
                                     truncation="longest_first" if truncate else None,
                                     max_length=self.manifest.max_length)
        for e in encs:
            self.bundle.check_length(len(e.ids))
        ids, mask = pad_batch([e.ids for e in encs], self.bundle.pad_id)
        logits = self.bundle.run(ids[None], mask[None])[0][0].astype(np.float32)
        probs = softmax(logits)
        best = int(probs.argmax())
        return {"answer": choices[best], "index": best, "scores": probs.tolist(),
                "logits": logits.tolist()}
