"""The runtime against the real transformers pipeline on the same tiny checkpoint: same keys,
order, labels and offsets, scores within 1e-4 (fp32 bundle file)."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import TEXTS, assert_same, hf_pipeline, needs_torch

pytestmark = needs_torch


@pytest.fixture(scope="module")
def pair(bundle_factory, model_factory):
    """task -> (our pipeline, transformers pipeline)."""
    from xlmr_serverless.runtime import load

    cache = {}

    def get(task, arch="xlm-roberta", hf_task=None):
        if (task, arch) not in cache:
            ours = load(bundle_factory(task, arch), precision="fp32")
            cache[task, arch] = ours, hf_pipeline(hf_task or task, model_factory(task, arch))
        return cache[task, arch]

    return get


MASKED = ["Paris is the <mask> of France.", "Le <mask> est bleu 😍", "東京は<mask>の首都です。",
          "<mask> <mask> live in Berlin."]


@pytest.mark.parametrize("arch", ["xlm-roberta", "roberta"])
@pytest.mark.parametrize("params", [{}, {"top_k": 3}, {"top_k": 1}])
def test_fill_mask(pair, arch, params):
    ours, theirs = pair("fill-mask", arch)
    for text in MASKED:
        assert_same(ours(text, **params), theirs(text, **params))
    assert_same(ours(MASKED[:2], **params), theirs(MASKED[:2], **params))
    assert_same(ours(MASKED[:1], **params), theirs(MASKED[:1], **params))  # 1-list unwrapped


def test_fill_mask_targets(pair):
    ours, theirs = pair("fill-mask")
    for targets in (["Paris", "capital", "▁city", "zzqx"], "Berlin", ["a", "a", "b"]):
        assert_same(ours(MASKED[0], targets=targets, top_k=10),
                    theirs(MASKED[0], targets=targets, top_k=10))


@pytest.mark.parametrize("params", [{}, {"top_k": None}, {"top_k": 2}, {"top_k": 1},
                                    {"function_to_apply": "sigmoid"},
                                    {"function_to_apply": "none", "top_k": None}])
def test_text_classification(pair, params):
    ours, theirs = pair("text-classification")
    for inputs in (TEXTS[0], TEXTS[:4], {"text": TEXTS[0], "text_pair": TEXTS[1]},
                   [{"text": TEXTS[2], "text_pair": TEXTS[3]}], [[[TEXTS[0], TEXTS[1]]]]):
        assert_same(ours(inputs, **params), theirs(inputs, **params))


def test_text_classification_multi_label(bundle_factory, model_factory):
    from xlmr_serverless.runtime import load

    kw = {"problem_type": "multi_label_classification"}
    ours = load(bundle_factory("text-classification", **kw), precision="fp32")
    theirs = hf_pipeline("text-classification", model_factory("text-classification", **kw))
    for params in ({}, {"top_k": None}):
        assert_same(ours(TEXTS[:3], **params), theirs(TEXTS[:3], **params))


@pytest.mark.parametrize("arch", ["xlm-roberta", "roberta"])
@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_token_classification(pair, arch, strategy):
    ours, theirs = pair("token-classification", arch)
    for params in ({"aggregation_strategy": strategy}, {"aggregation_strategy": strategy,
                                                        "ignore_labels": []}):
        assert_same(ours(TEXTS[:7], **params), theirs(TEXTS[:7], **params))


@pytest.mark.parametrize("strategy", ["simple", "first", "max"])
def test_token_classification_stride(pair, strategy):
    ours, theirs = pair("token-classification")
    long_text = " ".join(TEXTS[:7]) * 12
    assert len(ours.tokenizer.encode([long_text])[0].ids) > 512
    params = {"aggregation_strategy": strategy, "stride": 64, "ignore_labels": []}
    result = ours(long_text, **params)
    assert_same(result, theirs(long_text, **params))
    assert result[-1]["end"] > len(long_text) - 20  # the tail is covered, not cut off


def test_zero_shot(pair):
    ours, theirs = pair("zero-shot-classification")
    labels = ["politics", "public health", "science", "sport"]
    for params in ({}, {"multi_label": True}, {"hypothesis_template": "Ce texte parle de {}."}):
        assert_same(ours(TEXTS[:3], candidate_labels=labels, **params),
                    theirs(TEXTS[:3], candidate_labels=labels, **params))
    assert_same(ours(TEXTS[0], "politics, science"), theirs(TEXTS[0], "politics, science"))
    assert_same(ours(TEXTS[0], candidate_labels=["one"]), theirs(TEXTS[0], candidate_labels=["one"]))


def test_feature_extraction(pair):
    ours, theirs = pair("feature-extraction")
    for inputs in (TEXTS[0], TEXTS[:5]):
        assert_same(ours(inputs), theirs(inputs))
    assert_same(ours(TEXTS[:3], tokenize_kwargs={"max_length": 4}),
                theirs(TEXTS[:3], tokenize_kwargs={"max_length": 4}))


def test_batching_is_order_and_padding_invariant(bundle_factory):
    from xlmr_serverless.runtime import load

    texts = TEXTS[:7]
    one = load(bundle_factory("text-classification"), precision="fp32", batch_size=1)
    many = load(bundle_factory("text-classification"), precision="fp32", batch_size=3)
    assert_same(many(texts, top_k=None), one(texts, top_k=None), atol=1e-5)


def _qa_pipeline_or_skip(model_factory, arch):
    import transformers

    if "question-answering" not in transformers.pipelines.SUPPORTED_TASKS:
        pytest.skip(f"transformers {transformers.__version__} has no question-answering pipeline "
                    "(removed in 5.x): run under the 4.57 environment")
    return hf_pipeline("question-answering", model_factory("question-answering", arch))


CONTEXT = ("My name is Wolfgang and I live in Berlin. Je m'appelle Wolfgang et j'habite à Berlin. "
           "私の名前はヴォルフガングです。")


@pytest.mark.parametrize("arch", ["xlm-roberta", "roberta"])
@pytest.mark.parametrize("params", [{}, {"top_k": 3}, {"handle_impossible_answer": True},
                                    {"align_to_words": False, "top_k": 2},
                                    {"max_answer_len": 3, "top_k": 5}])
def test_question_answering(bundle_factory, model_factory, arch, params):
    from xlmr_serverless.runtime import load

    theirs = _qa_pipeline_or_skip(model_factory, arch)
    ours = load(bundle_factory("question-answering", arch), precision="fp32")
    q = "Where do I live?"
    assert_same(ours(question=q, context=CONTEXT, **params),
                theirs(question=q, context=CONTEXT, **params))
    assert_same(ours({"question": q, "context": CONTEXT}, **params),
                theirs({"question": q, "context": CONTEXT}, **params))
    assert_same(ours(question=[q, "Who am I?"], context=CONTEXT, **params),
                theirs(question=[q, "Who am I?"], context=CONTEXT, **params))


def test_question_answering_long_context(bundle_factory, model_factory):
    from xlmr_serverless.runtime import load

    theirs = _qa_pipeline_or_skip(model_factory, "xlm-roberta")
    ours = load(bundle_factory("question-answering"), precision="fp32")
    context = "HuggingFace was founded in Paris. " * 60
    for params in ({"top_k": 4}, {"doc_stride": 32, "max_seq_len": 96, "top_k": 3},
                   {"handle_impossible_answer": True}):
        assert_same(ours(question="Where was it founded?", context=context, **params),
                    theirs(question="Where was it founded?", context=context, **params))


def test_multiple_choice_matches_torch(bundle_factory, model_factory):
    """No pipeline exists: compare with the model on optimum's input layout."""
    import torch
    import transformers

    from xlmr_serverless.runtime import load

    folder = model_factory("multiple-choice")
    model = transformers.AutoModelForMultipleChoice.from_pretrained(str(folder)).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = load(bundle_factory("multiple-choice"), precision="fp32")
    prompt, choices = "Where is the Eiffel tower?", ["In Paris.", "En Berlín 🇩🇪", "東京"]
    enc = tok([prompt] * 3, choices, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**{k: v[None] for k, v in enc.items()}).logits[0].numpy()
    got = ours({"prompt": prompt, "choices": choices})
    np.testing.assert_allclose(got["logits"], logits, atol=1e-4)
    assert got["index"] == int(logits.argmax()) and got["answer"] == choices[got["index"]]
    assert abs(sum(got["scores"]) - 1) < 1e-5


def test_causal_lm_matches_torch(bundle_factory, model_factory):
    import torch
    import transformers

    from xlmr_serverless.runtime import load

    folder = model_factory("causal-lm")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = load(bundle_factory("causal-lm"), precision="fp32")
    text = "The capital of France is"
    ids = tok(text, return_tensors="pt").input_ids[:, :-1]  # drop </s>: predict what follows
    with torch.no_grad():
        probs = model(input_ids=ids).logits[0, -1].softmax(-1)
    top = probs.topk(3)
    got = ours(text, top_k=3)
    assert [g["token"] for g in got] == top.indices.tolist()
    np.testing.assert_allclose([g["score"] for g in got], top.values.numpy(), atol=1e-5)
