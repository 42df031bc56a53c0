"""The cost model (runtime/budget.py) is a bound, not a guess: for generated requests on every
task, the tokens counted before the model runs are the tokens it runs (windows, pairs and
choices counted arithmetically from one tokenization), the numbers counted are what the graph
returns, and the answer's JSON is never larger than the bound checked before it was made
(texts full of escapes, quotes, long Georgian pieces and emoji included)."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest

from tests.conftest import needs_bundles

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = [needs_bundles, pytest.mark.serving]

PIECES = ["Berlin", " ", "  ", "\n", "\t", '"', "\\", "\u0001", "სამართლიანობისთვის", "😍",
          "東京", "\ufb03", "<mask>", "a", "é", "\u200b", "Wolfgang", ".", "{}"]
texts = st.lists(st.sampled_from(PIECES), min_size=1, max_size=40).map("".join).filter(str.strip)


@dataclasses.dataclass(frozen=True)
class Recording:
    """A Budget with no limits that notes what the pipeline counted."""

    seen: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    max_input_chars: int | None = None
    max_tokens: int | None = None
    max_output_values: int | None = None
    max_top_k: int | None = None
    max_template_chars: int | None = None
    max_response_bytes: int | None = None

    def _note(self, kind: str, value: int) -> None:
        self.seen.setdefault(kind, []).append(value)

    def check_chars(self, chars: int, what: str) -> None:
        self._note("chars", chars)

    def check_tokens(self, tokens: int, what: str) -> None:
        self._note("tokens", tokens)

    def check_outputs(self, values: int, what: str) -> None:
        self._note("outputs", values)

    def check_response(self, size: int, what: str) -> None:
        self._note("response", size)

    def check_top_k(self, top_k: int) -> None:
        pass

    def check_template(self, template: str) -> None:
        pass


@pytest.fixture(scope="module")
def pipes(bundle_factory):
    from xlmr_serverless.runtime import load

    loaded: dict[str, Any] = {}

    def make(task: str) -> Any:
        if task not in loaded:
            loaded[task] = load(bundle_factory(task), batch_size=4)
        return loaded[task]

    return make


def run(pipe, call) -> tuple[Any, Recording, int, int]:
    """call(pipe)'s answer as JSON-ready values, what was counted, and what the graph ran and
    returned (tokens, numbers)."""
    budget = Recording()
    pipe.budget = budget
    returned: list[int] = []
    real = pipe.bundle.run

    def counting(ids: Any, mask: Any) -> Any:
        outs = real(ids, mask)
        returned.append(sum(int(np.prod(o.shape)) for o in outs))
        return outs

    pipe.bundle.run = counting
    try:
        with pipe.meter() as usage:
            answer = call(pipe)
    finally:
        pipe.bundle.run = real
    return answer, budget, usage.tokens, sum(returned)


def assert_bounded(answer: Any, budget: Recording, tokens: int, returned: int) -> None:
    size = len(json.dumps(answer, ensure_ascii=False).encode())
    assert size <= sum(budget.seen["response"]), (size, budget.seen["response"])
    if "tokens" in budget.seen:
        assert tokens <= max(budget.seen["tokens"]), (tokens, budget.seen["tokens"])
    if "outputs" in budget.seen:
        assert returned <= max(budget.seen["outputs"]), (returned, budget.seen["outputs"])


SETTINGS = settings(max_examples=50, deadline=None, derandomize=True, database=None)


@given(text=texts, top_k=st.integers(1, 12), masks=st.integers(1, 3))
@SETTINGS
def test_fill_mask_is_within_its_bound(pipes, text, top_k, masks):
    pipe = pipes("fill-mask")
    inputs = " ".join([text] + ["<mask>"] * masks)
    assert_bounded(*run(pipe, lambda p: p.serve([inputs, "a <mask> b"], top_k=top_k)))


@given(text=texts, strategy=st.sampled_from(["none", "simple", "first", "average", "max"]),
       stride=st.none() | st.integers(16, 48), repeat=st.integers(1, 8))
@SETTINGS
def test_token_classification_counts_its_windows_exactly(pipes, text, strategy, stride, repeat):
    from xlmr_serverless.runtime import InputTooLongError, InvalidInputError

    pipe = pipes("token-classification")
    pipe.manifest = dataclasses.replace(pipe.manifest, max_length=64)  # windows on short texts
    params = {"aggregation_strategy": strategy, "stride": stride}
    try:
        answer, budget, tokens, returned = run(pipe, lambda p: p.serve(text * repeat, **params))
    except (InputTooLongError, InvalidInputError):  # no stride, or stride with strategy none
        assert stride is None or strategy == "none"
        return
    assert_bounded(answer, budget, tokens, returned)
    assert set(budget.seen["tokens"]) == {tokens}  # the windows, counted before they were built


@given(premise=texts, labels=st.lists(texts, min_size=1, max_size=5), multi=st.booleans())
@SETTINGS
def test_zero_shot_counts_its_pairs_exactly(pipes, premise, labels, multi):
    pipe = pipes("zero-shot-classification")
    answer, budget, tokens, returned = run(
        pipe, lambda p: p.serve([premise, premise * 3], candidate_labels=labels, multi_label=multi))
    assert_bounded(answer, budget, tokens, returned)
    assert budget.seen["tokens"][1:] == [tokens, tokens]  # the pairs, before they were built


@given(prompt=texts, choices=st.lists(texts, min_size=2, max_size=4), truncate=st.booleans())
@SETTINGS
def test_multiple_choice_counts_its_rows_exactly(pipes, prompt, choices, truncate):
    from xlmr_serverless.runtime import InputTooLongError

    pipe = pipes("multiple-choice")
    try:
        answer, budget, tokens, returned = run(pipe, lambda p: p.serve(
            {"prompt": prompt * 20, "choices": choices}, truncation=truncate))
    except InputTooLongError:
        assert not truncate
        return
    assert_bounded(answer, budget, tokens, returned)
    assert set(budget.seen["tokens"]) == {tokens}


@given(question=texts, context=texts, top_k=st.integers(1, 5), repeat=st.integers(1, 80))
@SETTINGS
def test_question_answering_is_within_its_bound(pipes, question, context, top_k, repeat):
    pipe = pipes("question-answering")
    assert_bounded(*run(pipe, lambda p: p.serve(
        {"question": question, "context": context * repeat}, top_k=top_k, max_seq_len=96,
        doc_stride=16, handle_impossible_answer=True)))


@given(query=texts, docs=st.lists(texts, min_size=1, max_size=4), truncate=st.booleans())
@SETTINGS
def test_rerank_and_classification_are_within_their_bounds(pipes, query, docs, truncate):
    from xlmr_serverless.runtime import InputTooLongError

    pipe = pipes("text-classification")
    try:
        answer, budget, tokens, returned = run(
            pipe, lambda p: p.rerank(query * 3, docs, truncate=truncate, return_text=True))
    except InputTooLongError:
        assert not truncate
        return
    assert_bounded(answer, budget, tokens, returned)
    assert set(budget.seen["tokens"]) == {tokens}
    assert_bounded(*run(pipe, lambda p: p.serve([query, {"text": query, "text_pair": docs[0]}])))


@given(items=st.lists(texts, min_size=1, max_size=4), pooled=st.booleans())
@SETTINGS
def test_embeddings_and_token_lists_are_within_their_bounds(pipes, items, pooled):
    pipe = pipes("feature-extraction")
    params = {"pooling": "mean"} if pooled else {}
    assert_bounded(*run(pipe, lambda p: p.serve(items, **params)))
    assert_bounded(*run(pipe, lambda p: p.tokenize(items)))


def test_the_characters_counted_bound_the_tokens(pipes):
    """What max_input_chars counts (characters after the normalizer) is at least the tokens a
    text becomes, less its special tokens and Metaspace's one leading piece: NFKC's 18-fold
    expansion counted, not the raw length."""
    pipe = pipes("feature-extraction")
    for text in ["\ufdfa" * 40, "a " * 300, "東京" * 50, "😍" * 30, "\u0001" * 10 + "x",
                 "სამართლიანობისთვის " * 20]:
        chars = pipe.tokenizer.normalized_chars([text])
        pieces = len(pipe.tokenizer.pieces([text])[0].ids)
        assert pieces <= chars + 1, (text[:20], pieces, chars)
    assert pipe.tokenizer.normalized_chars(["\ufdfa" * 40]) == 40 * 18
