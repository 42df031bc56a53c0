"""Requests an attacker sends, each under the body limit: the cases once found to kill the
process, cost seconds and gigabytes, answer over 6 MB or answer 500, and more of the same
kinds. The tests send every one through the handler (tests/test_hostile.py) and seed the
fuzzers with them; benchmarks.soak mixes them into its traffic. Each case: the task whose
bundle it targets, the route, the raw body, and the statuses a correct answer may have."""
from __future__ import annotations

import dataclasses
import json
from typing import Any


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    task: str
    route: str
    body: str  # the raw request body, as sent
    expect: tuple[int, ...]  # the statuses a correct answer may have


def case(name: str, task: str, body: Any, *expect: int, route: str = "/predict") -> Case:
    raw = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    return Case(name, task, route, raw, expect)


def predict(inputs: Any, **parameters: Any) -> dict[str, Any]:
    return {"inputs": inputs, "parameters": parameters}


GEORGIAN = "სამართლიანობისთვის"  # XLM-R pieces of up to 48 bytes

CASES: tuple[Case, ...] = (
    # a native panic (tokenizers' stride assertion) and its neighbours
    case("stride-at-the-panic", "token-classification",
         predict("a " * 600, aggregation_strategy="simple", stride=510), 422),
    case("stride-past-the-panic", "token-classification",
         predict("a " * 600, aggregation_strategy="simple", stride=511), 422),
    case("stride-just-under", "token-classification",
         predict("a " * 600, aggregation_strategy="simple", stride=509), 200, 413),
    case("qa-doc-stride-at-the-room", "question-answering",
         {"inputs": {"question": "Where? " * 40, "context": "Berlin is a city. " * 200},
          "parameters": {"doc_stride": 300, "max_seq_len": 384}}, 422),
    # output rows: masks are vocabulary-wide rows
    case("510-masks", "fill-mask", predict("<mask>" * 510, top_k=1), 413),
    case("64-masks-in-64-inputs", "fill-mask", predict(["a <mask> b"] * 64, top_k=1), 200, 413),
    # work before it is counted
    case("choices-times-prompt", "multiple-choice",
         {"inputs": {"prompt": "word " * 4000, "choices": ["a", "b"] * 500}}, 413),
    case("labels-times-premise", "zero-shot-classification",
         predict("word " * 4000, candidate_labels=[f"l{i}" for i in range(512)]), 413),
    case("ner-windows", "token-classification",
         predict("word " * 2400, aggregation_strategy="simple", stride=500), 413),
    case("rerank-query-times-texts", "text-classification",
         {"query": "word " * 20_000, "texts": ["a text"] * 64}, 413, route="/rerank"),
    case("ignore-labels-180k", "token-classification",
         predict("My name is Wolfgang.", ignore_labels=[f"L{i}" for i in range(90_000)]), 200),
    case("normalisation-expands-18x", "text-classification",
         predict("\ufdfa" * 300_000, truncation=True), 413),
    case("a-megabyte-of-short-words", "feature-extraction",
         {"inputs": "a " * 450_000, "truncate": True}, 413, route="/embed"),
    # answers over the response limit
    case("tokenize-everything", "feature-extraction",
         {"inputs": "a " * 190_000}, 413, route="/tokenize"),
    case("tokenize-under-the-characters", "feature-extraction",
         {"inputs": "a " * 99_000}, 413, route="/tokenize"),
    case("fill-mask-long-pieces", "fill-mask",
         predict([(" ".join([GEORGIAN] * 120) + " <mask>")] * 4, top_k=100), 200, 413),
    case("similarity-many-sentences", "feature-extraction",
         {"inputs": {"source_sentence": "a", "sentences": ["b"] * 100_000}}, 413,
         route="/similarity"),
    case("invocations-not-an-object", "feature-extraction", "[" * 10 + "]" * 10, 422, 400,
         route="/invocations"),
    case("invocations-many-inputs", "feature-extraction", {"inputs": ["a"] * 100_000}, 413,
         route="/invocations"),
    case("embed-all-every-token", "feature-extraction",
         {"inputs": ["word " * 600] * 64, "truncate": True}, 413, route="/embed_all"),
    case("embed-sparse-without-the-head", "feature-extraction", {"inputs": ["a"] * 100}, 424,
         route="/embed_sparse"),
    case("return-sparse-without-the-head", "feature-extraction",
         predict(["a"] * 100, return_sparse=True), 422),
    case("return-nothing", "feature-extraction", predict("a", return_dense=False), 422),
    case("return-flag-not-a-bool", "feature-extraction", predict("a", return_dense=1), 422),
    case("embed-ids-past-the-vocabulary", "feature-extraction", {"inputs": [[0, 2**31]]}, 422,
         route="/embed"),
    case("embed-every-id", "feature-extraction", {"inputs": [[5] * 1000] * 300}, 413,
         route="/embed"),
    case("embed-ids-nested", "feature-extraction", {"inputs": [[[5]]]}, 422, route="/embed"),
    case("decode-every-id", "feature-extraction", {"ids": [5] * 300_000}, 413, route="/decode"),
    case("decode-many-sequences", "feature-extraction", {"ids": [[5]] * 150_000}, 413,
         route="/decode"),
    case("decode-past-the-vocabulary", "feature-extraction", {"ids": [2**31]}, 422,
         route="/decode"),
    case("decode-empty", "feature-extraction", {"ids": []}, 200, route="/decode"),
    # integral floats and numbers the schema must bound
    case("top-k-as-float", "fill-mask", predict("Paris is the <mask>.", top_k=2.0), 200),
    case("top-k-fraction", "fill-mask", predict("Paris is the <mask>.", top_k=2.5), 422),
    case("max-length-as-float", "text-classification", predict("hello", max_length=10.0), 200),
    case("stride-as-float", "token-classification",
         predict("a " * 600, aggregation_strategy="simple", stride=100.0), 200, 413),
    case("tokenize-kwargs-float", "feature-extraction",
         predict("hello world", tokenize_kwargs={"max_length": 4.0}), 200),
    case("max-answer-len-1e30", "question-answering",
         {"inputs": {"question": "Where?", "context": "In Berlin."},
          "parameters": {"max_answer_len": 1e30}}, 422),
    case("top-k-huge", "question-answering",
         {"inputs": {"question": "Where?", "context": "In Berlin."},
          "parameters": {"top_k": 10 ** 30}}, 422),
    # truncation strategies tokenizers rejects
    case("only-second-on-one-text", "text-classification",
         predict("a single text", truncation="only_second"), 422),
    case("only-first-long-pair", "text-classification",
         predict({"text": "short", "text_pair": "word " * 700}, truncation="only_first"), 422),
    case("rerank-long-query-truncated", "text-classification",
         {"query": "word " * 700, "texts": ["a", "b"], "truncate": True}, 422, route="/rerank"),
    # the JSON parser's own limits
    case("integer-of-5000-digits", "fill-mask",
         '{"inputs": "a <mask>", "parameters": {"top_k": ' + "9" * 5000 + "}}", 400),
    case("nan", "fill-mask", '{"inputs": "a <mask>", "parameters": {"top_k": NaN}}', 400),
    case("infinity", "text-classification", '{"inputs": "a", "parameters": {"top_k": Infinity}}',
         400),
    case("deep-nesting", "text-classification", "[" * 100_000 + "]" * 100_000, 400),
    case("many-targets", "fill-mask",
         predict("Paris is the <mask>.", targets=[f"t{i}" for i in range(50_000)]), 200, 413),
)


def tasks() -> list[str]:
    return sorted({c.task for c in CASES})
