"""zero-shot-classification, as transformers' pipelines/zero_shot_classification.py: one
(premise, hypothesis) pair per candidate label through an NLI head, the entailment column
found from label2id, no max-subtraction and reversed ties, exactly as there."""
from __future__ import annotations

import string
from typing import Any

import numpy as np

from ..budget import FLOAT_JSON_BYTES, text_json_bytes
from ..errors import EmptyInputError, InvalidInputError
from ..parameters import BOOL, TEXT, TEXTS, either, nullable
from ..pipeline import Options, Pipeline, Prepared, RowOutputs, as_text_list
from .spec import TaskSpec, logits

SPEC = TaskSpec(
    name="zero-shot-classification", auto_class="AutoModelForSequenceClassification",
    head="ForSequenceClassification", outputs=logits("batch", None), parity="row",
    labelled=True, requires="entailment_label", truncation={},
    sample={"inputs": "The new budget was approved by parliament.",
            "parameters": {"candidate_labels": ["politics", "sport"]}},
    parameters={"candidate_labels": either(TEXT, TEXTS), "hypothesis_template": TEXT,
                "multi_label": nullable(BOOL)},
    optimum_class="ORTModelForSequenceClassification")

DEFAULT_TEMPLATE = "This example is {}."
LABEL_BYTES = 24 + FLOAT_JSON_BYTES  # {"label", "score"} and the score


def entailment_id(label2id: dict[str, int]) -> int:
    """First label (config order) starting with 'entail'; -1 (the last column) otherwise."""
    for label, ind in label2id.items():
        if label.lower().startswith("entail"):
            return ind
    return -1


def parse_labels(labels: Any) -> list[str]:
    """A list of labels, or one comma-separated string of them, as the pipeline takes them."""
    if isinstance(labels, str):
        labels = [label.strip() for label in labels.split(",") if label.strip()]
    return list(labels)


def valid_template(template: Any) -> bool:
    """Exactly one plain `{}` and no other replacement field: `{1}`, `{x}`, `{:>200000000}`
    (a 98-byte request asking for gigabytes) or a lone `{` are refused before any work."""
    if not isinstance(template, str):
        return False
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template)
                  if name is not None]
    except ValueError:  # unbalanced braces
        return False
    return fields == [("", "", None)]


def scores_for(logits: np.ndarray, multi_label: bool, entail: int) -> np.ndarray:
    """logits [labels, classes] -> one score per label."""
    if multi_label or logits.shape[0] == 1:
        contra = -1 if entail == 0 else 0
        pair = logits[..., [contra, entail]]
        return (np.exp(pair) / np.exp(pair).sum(-1, keepdims=True))[..., 1]
    e = logits[..., entail]
    return np.exp(e) / np.exp(e).sum(-1, keepdims=True)


class ZeroShotClassificationPipeline(Pipeline):
    spec = SPEC

    def __call__(self, inputs: Any, *args: Any, **params: Any) -> Any:
        """The candidate labels may come second, positionally, as in transformers."""
        if len(args) == 1 and "candidate_labels" not in params:
            params["candidate_labels"] = args[0]
        return super().__call__(inputs, **params)

    def sanitize(self, params: dict[str, Any]) -> Options:
        labels = parse_labels(params.get("candidate_labels", []))
        template = params.get("hypothesis_template", DEFAULT_TEMPLATE)
        if not labels:
            raise EmptyInputError("You must include at least one label and at least one sequence.")
        if not valid_template(template):
            raise InvalidInputError(f'The provided hypothesis_template "{template}" was not able to '
                                    "be formatted with the target labels. Make sure the passed "
                                    "template includes formatting syntax such as {} where the "
                                    "label should go.")
        self.budget.check_template(template)
        return {"labels": labels, "template": template,
                "multi_label": bool(params.get("multi_label", False))}

    def split_inputs(self, inputs: Any, options: Options) -> tuple[list[Any], Any]:
        return as_text_list(inputs, "sequences")

    def texts(self, items: list[str], options: Options) -> list[str]:
        """The premises and each label's hypothesis; before the hypotheses are written out,
        the pairs are counted (every pair is at least its special tokens)."""
        labels = options["labels"]
        self.budget.check_tokens(self.tokenizer.added_tokens(pair=True) * len(items) * len(labels),
                                 f"at least {self.tokenizer.added_tokens(pair=True)} a pair, "
                                 f"{len(items)} input(s) x {len(labels)} candidate labels")
        options["hypotheses"] = [options["template"].format(label) for label in labels]
        return [*items, *options["hypotheses"]]

    def preprocess(self, items: list[str], options: Options) -> list[Prepared]:
        """One (premise, hypothesis) row per candidate label, built from one tokenization of
        each premise and each hypothesis once their pairs' tokens were counted. The premise
        is truncated first (only_first); if that cannot fit, nothing is, as the pipeline
        retries on tokenizers' 'too short' error."""
        premises, hypotheses = self.tokenizer.pieces(items), \
            self.tokenizer.pieces(options["hypotheses"])
        added, limit = self.tokenizer.added_tokens(pair=True), self.manifest.max_length
        fits = all(len(p.ids) + len(h.ids) + added <= limit or len(h.ids) + added < limit
                   for p in premises for h in hypotheses)
        self.budget.check_tokens(
            sum(min(len(p.ids) + len(h.ids) + added, limit if fits else 1 << 62)
                for p in premises for h in hypotheses),
            f"{len(items)} input(s) x {len(hypotheses)} candidate labels")
        rows = self.tokenizer.pair_ids(
            [p for p in premises for _ in hypotheses], [h for _ in premises for h in hypotheses],
            truncation="only_first" if fits else None, max_length=limit)
        n = len(hypotheses)
        return [Prepared(rows[i * n:(i + 1) * n], s) for i, s in enumerate(items)]

    def postprocess(self, prepared: Prepared, outputs: list[RowOutputs], options: Options) -> Any:
        labels = options["labels"]
        logits = np.stack([o[0] for o in outputs]).astype(np.float32)
        entail = entailment_id(self.manifest.label2id or {})
        scores = scores_for(logits, options["multi_label"], entail)
        top = list(reversed(scores.argsort()))
        return {"sequence": prepared.context, "labels": [labels[i] for i in top],
                "scores": scores[top].tolist()}

    def serve(self, inputs: Any, *args: Any, **params: Any) -> Any:
        """The Inference API's shape: [{label, score}, ...] best first (one list per input
        when a list is sent), as huggingface_hub's InferenceClient expects."""
        results = self(inputs, *args, **params)
        as_pairs = [[{"label": label, "score": score}
                     for label, score in zip(r["labels"], r["scores"])]
                    for r in (results if isinstance(results, list) else [results])]
        return as_pairs if isinstance(results, list) else as_pairs[0]

    def answer_bytes(self, prepared: Prepared, options: Options) -> int:
        """The premise (the pipeline's `sequence`) and every label with its score."""
        return text_json_bytes(len(prepared.context)) + sum(
            LABEL_BYTES + text_json_bytes(len(label)) for label in options["labels"])
