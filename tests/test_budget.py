"""A cost budget per request, checked before any work: the small requests that once cost
seconds to minutes and gigabytes are answered 413/422 at once, naming the limit and the
value; ordinary requests and the next valid one are untouched."""
from __future__ import annotations

import dataclasses
import json

import pytest

from tests.conftest import needs_bundles
from tests.test_lambda import call, http_event

pytestmark = [needs_bundles, pytest.mark.serving]


@pytest.fixture(scope="module")
def handler(bundle_factory):
    from xlmr_serverless.aws_lambda.app import make_handler
    from xlmr_serverless.aws_lambda.config import Settings

    cache = {}

    def make(task: str, **env: str):
        key = (task, tuple(sorted(env.items())))
        if key not in cache:
            settings = dataclasses.replace(Settings.from_env({f"XLMR_{k}": v for k, v in env.items()}),
                                           bundle_dir=bundle_factory(task))
            cache[key] = make_handler(settings)
        return cache[key]

    return make


def predict(h, inputs, **parameters):
    return call(h, http_event("POST", "/predict", json.dumps(
        {"inputs": inputs, "parameters": parameters})))


def test_the_amplifications_that_were_found(handler):
    zs, fm, qa = (handler(t) for t in ("zero-shot-classification", "fill-mask",
                                       "question-answering"))
    status, body, _ = predict(zs, "x", candidate_labels=["a"], hypothesis_template="{:>200000000}")
    assert status == 422 and "hypothesis_template" in body["error"]
    status, body, _ = predict(fm, "a <mask> b <mask> c <mask> d <mask>", top_k=10**9)
    assert status == 422 and "top_k must be smaller than or equal to 1000000" in body["error"]
    status, body, _ = predict(fm, "a <mask> b <mask> c <mask> d <mask>", top_k=500_000)
    assert status == 422 and "top_k must be at most 100 (max_top_k). Given: 500000" in \
        body["error"]
    context = "Berlin is a city. " * 40_000  # ~720 KB, under MAX_BODY_BYTES
    request = http_event("POST", "/predict", json.dumps({
        "inputs": {"question": "Where?", "context": context}, "parameters": {"doc_stride": 370}}))
    status, body, _ = call(qa, request)  # its characters alone are over the default
    assert status == 413 and "(max_input_chars)" in body["error"]
    status, body, _ = call(handler("question-answering", MAX_INPUT_CHARS="1000000"), request)
    assert status == 413 and body["type"] == "over_budget" and "window(s)" in body["error"]
    assert "the limit is 2048 (max_tokens)" in body["error"]
    status, body, _ = predict(zs, ["some text"] * 64, candidate_labels=[f"l{i}" for i in range(10_000)])
    assert status == 413 and "64 input(s) x 10000 candidate labels" in body["error"]
    # 64 truncated inputs of token embeddings: an answer of hundreds of MB, refused before
    status, body, _ = predict(handler("feature-extraction"), ["word " * 600] * 64, truncation=True)
    assert status == 413 and body["type"] == "over_budget"
    assert "max_response_bytes" in body["error"] or "max_tokens" in body["error"]


def test_the_answer_size_is_bounded(handler):
    """Token embeddings are tokens x hidden floats: too big an answer is refused up front."""
    fe = handler("feature-extraction", MAX_TOKENS="100000", MAX_RESPONSE_BYTES="200000")
    status, body, _ = predict(fe, ["word " * 200] * 4)
    assert status == 413 and "max_response_bytes" in body["error"] and "MB" in body["error"]
    status, out, _ = call(fe, http_event("POST", "/embed", json.dumps({"inputs": ["word " * 200] * 4})))
    assert status == 200 and len(out) == 4  # pooled: 4 vectors fit


def test_limits_come_from_the_environment(handler):
    tight = handler("text-classification", MAX_TOKENS="20")
    status, body, _ = predict(tight, "word " * 30)
    assert status == 413 and "the limit is 20 (max_tokens)" in body["error"]
    assert predict(tight, "short")[0] == 200  # the next valid request still answers


def test_ordinary_requests_are_untouched(handler):
    fm = handler("fill-mask")
    status, body, _ = predict(fm, "Paris is the <mask> of France.", top_k=100)
    assert status == 200 and len(body) == 100
    qa = handler("question-answering")
    status, body, _ = call(qa, http_event("POST", "/predict", json.dumps({"inputs": {
        "question": "Where do I live?", "context": "My name is Wolfgang and I live in Berlin."}})))
    assert status == 200 and "answer" in body


def test_the_python_api_has_no_limits_unless_given_one(bundle_factory):
    from xlmr_serverless.runtime import Budget, OverBudgetError, load

    folder = bundle_factory("text-classification")
    assert load(folder)(["word " * 100] * 30)  # 3,000+ tokens: no budget, no limit
    with pytest.raises(OverBudgetError, match="limit is 50"):
        load(folder, budget=Budget(max_tokens=50))("word " * 60)
