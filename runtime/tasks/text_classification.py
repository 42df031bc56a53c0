"""text-classification (and cross-encoder reranking through text pairs), as transformers'
pipelines/text_classification.py: same function choice, same nesting rules."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..budget import FLOAT_JSON_BYTES, text_json_bytes
from ..errors import InvalidInputError
from ..ops import sigmoid, softmax
from ..parameters import BOOL, POSITIVE_INT, choice, either, nullable
from ..pipeline import Options, Pipeline, Prepared, RowOutputs, as_item_list
from .spec import TaskSpec, logits

FUNCTIONS = ("softmax", "sigmoid", "none")
STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")
LABEL_BYTES = 24 + FLOAT_JSON_BYTES  # {"label", "score"} and the score

SPEC = TaskSpec(
    name="text-classification", auto_class="AutoModelForSequenceClassification",
    head="ForSequenceClassification", outputs=logits("batch", None), parity="row",
    labelled=True, truncation={"truncation": True}, routes=("/predict", "/rerank"),
    sample={"inputs": ["I love it", "Je déteste ça"]},
    parameters={"top_k": nullable(POSITIVE_INT), "function_to_apply": nullable(choice(*FUNCTIONS)),
                "truncation": nullable(either(BOOL, choice(*STRATEGIES))),
                "max_length": nullable(POSITIVE_INT)},
    optimum_class="ORTModelForSequenceClassification")


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


def relevance(scores: np.ndarray, raw: bool) -> np.ndarray:
    """Cross-encoder relevance from logits [pairs, labels]: one logit -> sigmoid, several ->
    P(last label); `raw` -> the last logit as it is (TEI's raw_scores)."""
    if raw:
        return scores[:, -1]
    return sigmoid(scores[:, 0]) if scores.shape[1] == 1 else softmax(scores)[:, -1]


class TextClassificationPipeline(Pipeline):
    spec = SPEC

    def sanitize(self, params: dict[str, Any]) -> Options:
        legacy = "top_k" not in params
        function = params["function_to_apply"].lower() \
            if params.get("function_to_apply") is not None else \
            default_function(self.manifest.problem_type, len(self.manifest.id2label or {}))
        truncation = params.get("truncation")
        truncation = truncation.lower() if isinstance(truncation, str) else truncation
        strategy = "longest_first" if truncation is True else None \
            if truncation in (None, False, "do_not_truncate") else truncation
        max_length = params.get("max_length")
        if max_length is not None and strategy is None:
            strategy = "longest_first"
        return {"legacy": legacy, "function": function, "strategy": strategy,
                "top_k": 1 if legacy else params.get("top_k"),
                "max_length": min(max_length or self.manifest.max_length,
                                  self.manifest.max_length)}

    def split_inputs(self, inputs: Any, options: Options) -> tuple[list[Any], Any]:
        items, _ = as_item_list(inputs)
        kind = "list" if isinstance(inputs, list) else "str" if isinstance(inputs, str) else "pair"
        return [self.as_pair(x) for x in items], kind

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

    def preprocess(self, items: list[Any], options: Options) -> list[Prepared]:
        if options["strategy"] == "only_second" and not all(isinstance(x, tuple) for x in items):
            raise InvalidInputError("truncation only_second cuts the second text of a pair: "
                                    'every input must be {"text", "text_pair"}')
        encs = self.tokenizer.encode(items, truncation=options["strategy"],
                                     max_length=options["max_length"],
                                     direction=options.get("direction", "right"))
        return [Prepared([e.ids]) for e in encs]

    def answer_bytes(self, prepared: Prepared, options: Options) -> int:
        """Every label with its score (the Inference API's shape; rerank's is smaller)."""
        labels = (self.manifest.id2label or {}).values()
        return sum(LABEL_BYTES + text_json_bytes(len(label)) for label in labels)

    def postprocess(self, prepared: Prepared, outputs: list[RowOutputs], options: Options) -> Any:
        scores = apply_function(outputs[0][0], options["function"])
        id2label = self.manifest.id2label or {}
        top_k, legacy = options["top_k"], options["legacy"]
        if top_k == 1 and legacy:
            return {"label": id2label[int(scores.argmax())], "score": float(scores.max())}
        out: list[dict[str, Any]] = [{"label": id2label[i], "score": float(s)}
                                     for i, s in enumerate(scores)]
        if not legacy:
            out.sort(key=lambda d: float(d["score"]), reverse=True)
            out = out[:top_k] if top_k is not None else out
        return out

    def collate(self, results: list[Any], shape: Any, options: Options) -> Any:
        """The pipeline's nesting: a single string answers a one-element list (legacy call)."""
        if shape == "list":
            return results
        return [results[0]] if shape == "str" and options["legacy"] else results[0]

    def serve(self, inputs: Any, **params: Any) -> Any:
        """The Inference API's shape: every label, best first, one list per input (a single
        text or pair is one input), as huggingface_hub's InferenceClient and TEI expect."""
        params.setdefault("top_k", None)
        results = self(inputs, **params)
        return results if isinstance(inputs, list) else [results]

    def rerank(self, query: str, texts: list[str], truncate: bool = False,
               raw_scores: bool = False, return_text: bool = False,
               direction: str = "right") -> list[dict[str, Any]]:
        """TEI's /rerank on a cross-encoder: (query, text) pairs scored, best first; `truncate`
        cuts the texts (never the query), at their end or (`direction="left"`) their start."""
        options = {**self.sanitize({"truncation": "only_second" if truncate else None}),
                   "direction": direction}
        query_pieces, *text_pieces = self.tokenizer.pieces([query, *texts])
        added, limit = self.tokenizer.added_tokens(pair=True), options["max_length"]
        q = len(query_pieces.ids)
        longest = max(len(t.ids) for t in text_pieces) + q + added
        if truncate and longest > limit and q + added >= limit:
            raise InvalidInputError(f"the query ({q} tokens) leaves no room for the texts in the "
                                    f"model's {limit} positions ({added} special tokens): "
                                    "truncate cuts the texts, never the query")
        cap = limit if truncate else 1 << 62
        self.budget.check_tokens(sum(min(q + len(t.ids) + added, cap) for t in text_pieces),
                                 f"the query with each of {len(texts)} texts")
        rows = self.tokenizer.pair_ids([query_pieces] * len(texts), text_pieces,
                                       truncation=options["strategy"], max_length=limit,
                                       direction=direction)
        prepared = [Prepared([row]) for row in rows]
        self.check_cost(prepared, options)
        if return_text:
            self.budget.check_response(sum(text_json_bytes(len(t)) for t in texts) +
                                       len(texts) * LABEL_BYTES, f"{len(texts)} texts returned")
        scores = np.stack([o[0][0] for o in self.forward(prepared)]).astype(np.float32)
        out = [{"index": i, "score": float(s), **({"text": texts[i]} if return_text else {})}
               for i, s in enumerate(relevance(scores, raw_scores))]
        return sorted(out, key=lambda d: d["score"], reverse=True)
