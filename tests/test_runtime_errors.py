"""Bad input to the runtime: one exception type per kind, with a message a user can act on."""
from __future__ import annotations

import pytest

from tests.conftest import needs_bundles

pytestmark = [needs_bundles, pytest.mark.serving]


@pytest.fixture(scope="module")
def pipes(bundle_factory):
    from xlmr_serverless.runtime import load

    return lambda task: load(bundle_factory(task))


def test_errors(pipes):
    from xlmr_serverless.runtime import EmptyInputError, InputTooLongError, InvalidInputError

    fm, tc = pipes("fill-mask"), pipes("text-classification")
    with pytest.raises(EmptyInputError, match="empty"):
        fm([])
    with pytest.raises(InvalidInputError, match="must be a string or a list of strings, got int"):
        fm(3)
    with pytest.raises(InvalidInputError, match=r"No mask_token \(<mask>\) found"):
        fm("no mask here")
    with pytest.raises(InvalidInputError, match="unknown parameter.*temperature.*allowed: targets"):
        fm("a <mask>", temperature=1)
    with pytest.raises(InvalidInputError, match="parameter top_k must be bigger than or equal to 1, got 0"):
        fm("a <mask>", top_k=0)
    with pytest.raises(InputTooLongError, match="at most 512 tokens. Given: "):
        tc("word " * 600)
    assert tc("word " * 600, truncation=True)[0]["label"]
    with pytest.raises(InvalidInputError, match="parameter function_to_apply must be one of"):
        tc("x", function_to_apply="default")
    with pytest.raises(InvalidInputError, match="text pairs"):
        tc([["a", "b"]])


def test_task_specific_errors(pipes):
    from xlmr_serverless.runtime import EmptyInputError, InputTooLongError, InvalidInputError

    qa, ner, zs = pipes("question-answering"), pipes("token-classification"), \
        pipes("zero-shot-classification")
    with pytest.raises(InvalidInputError, match="needs a question and a context"):
        qa(question="Where?")
    with pytest.raises(InvalidInputError, match="`context` must be a non-empty string"):
        qa({"question": "Where?", "context": ""})
    with pytest.raises(InvalidInputError, match="don't have the same lengths"):
        qa(question=["a", "b"], context=["c"])
    with pytest.raises(InputTooLongError, match="Pass stride"):
        ner("word " * 600)
    with pytest.raises(InvalidInputError, match="stride needs an aggregation_strategy"):
        ner("x", stride=16)
    with pytest.raises(EmptyInputError, match="at least one label"):
        zs("x", candidate_labels=" , ")
    with pytest.raises(InvalidInputError, match="hypothesis_template"):
        zs("x", candidate_labels=["a"], hypothesis_template="no slot")
    mc = pipes("multiple-choice")
    with pytest.raises(InvalidInputError, match="at least two string choices"):
        mc({"prompt": "p", "choices": ["only one"]})


def test_errors_carry_http_status():
    from xlmr_serverless.runtime import errors

    assert errors.InvalidInputError.status == 422 and errors.EmptyInputError.status == 400
    assert errors.InputTooLongError("x").error_type == "input_too_long"
