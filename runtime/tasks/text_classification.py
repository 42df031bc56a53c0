"""text-classification (and cross-encoder reranking through text pairs), as transformers'
pipelines/text_classification.py: same function choice, same nesting rules."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import EmptyInputError, InvalidInputError
from ..ops import sigmoid, softmax
from ..pipeline import Pipeline, one_of, optional_positive_int

FUNCTIONS = ("softmax", "sigmoid", "none")


def default_function(problem_type: str | None, num_labels: int) -> str:
    """The pipeline's choice when function_to_apply is not given."""
    if problem_type == "regression":
        return "none"
    if problem_type == "multi_label_classification" or num_labels == 1:
        return "sigmoid"
    return "softmax"


def apply_function(logits: np.ndarray, function: str) -> np.ndarray:
    logits = logits.astype(np.float32)
    return sigmoid(logits) if function == "sigmoid" else softmax(logits) if function == "softmax" \
        else logits


class TextClassificationPipeline(Pipeline):
    task = "text-classification"
    parameters = frozenset({"top_k", "function_to_apply", "truncation", "max_length"})

    def __call__(self, inputs: Any, **params: Any) -> Any:
        self.check_parameters(params)
        legacy = "top_k" not in params
        top_k = optional_positive_int("top_k", params.get("top_k")) if not legacy else 1
        function = one_of("function_to_apply", params["function_to_apply"], FUNCTIONS) \
            if params.get("function_to_apply") is not None else \
            default_function(self.manifest.problem_type, len(self.manifest.id2label or {}))
        items = inputs if isinstance(inputs, list) else [inputs]
        if not items:
            raise EmptyInputError("inputs is empty")
        scores = self.forward([self.as_pair(x) for x in items], params)
        results = [self.postprocess(apply_function(s, function), top_k, legacy) for s in scores]
        if not isinstance(inputs, list):
            return [results[0]] if isinstance(inputs, str) and legacy else results[0]
        return results

    @staticmethod
    def as_pair(item: Any) -> str | tuple[str, str]:
        """A text, {"text", "text_pair"}, or the legacy [[text, pair]] form."""
        if isinstance(item, str):
            return item
        if isinstance(item, dict):
            if not isinstance(item.get("text"), str) or not isinstance(item.get("text_pair", ""), str):
                raise InvalidInputError('a pair must be {"text": str, "text_pair": str}')
            return (item["text"], item["text_pair"]) if "text_pair" in item else item["text"]
        if isinstance(item, list) and len(item) == 1 and isinstance(item[0], list) \
                and len(item[0]) == 2 and all(isinstance(t, str) for t in item[0]):
            return item[0][0], item[0][1]
        raise InvalidInputError('The pipeline received invalid inputs, if you are trying to send '
                                'text pairs, send a dictionary {"text": "My text", "text_pair": '
                                '"My pair"}')

    def forward(self, items: list[str | tuple[str, str]], params: dict[str, Any]) -> list[np.ndarray]:
        truncation = params.get("truncation")
        strategy = "longest_first" if truncation is True else truncation or None
        if params.get("max_length") is not None and strategy is None:
            strategy = "longest_first"
        max_length = min(params.get("max_length") or self.manifest.max_length,
                         self.manifest.max_length)
        encs = self.tokenizer.encode(items, truncation=strategy, max_length=max_length)
        return [o[0] for o in self.bundle.run_rows([e.ids for e in encs], self.batch_size, "row")]

    def postprocess(self, scores: np.ndarray, top_k: int | None, legacy: bool) -> Any:
        id2label = self.manifest.id2label or {}
        if top_k == 1 and legacy:
            return {"label": id2label[int(scores.argmax())], "score": float(scores.max())}
        out: list[dict[str, Any]] = [{"label": id2label[i], "score": float(s)}
                                     for i, s in enumerate(scores)]
        if not legacy:
            out.sort(key=lambda d: float(d["score"]), reverse=True)
            out = out[:top_k] if top_k is not None else out
        return out
