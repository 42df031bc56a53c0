"""The accuracy gate's judgement on outputs built to the case (numpy only, no model): near
ties fp32 cannot decide are not held against a quantized file, fill-mask is judged by its
top-k and its scores as well, and confident disagreements and collapsed embeddings still fail."""
from __future__ import annotations

import numpy as np
import pytest

from xlmr_serverless.export import validate
from xlmr_serverless.runtime.tasks import task_spec

pytestmark = pytest.mark.serving  # numpy only: the serving tier runs it too


def judged(task: str, ref: np.ndarray, got: np.ndarray) -> validate.Comparison:
    mask = np.ones(ref.shape[:2] if ref.ndim == 3 else (len(ref), 1), np.int64)
    return validate.compare([ref], [got], {"attention_mask": mask}, task_spec(task),
                            validate.Comparison())


def test_near_ties_are_not_judged_on_top1():
    """fp32's top two 0.01 apart: int8 swapping them is no error; rows fp32 is sure of are."""
    ref = np.array([[2.0, 1.99, 0.0], [3.0, 0.0, 0.0], [0.0, 5.0, 1.0]], np.float32)
    swapped = np.array([[1.99, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 5.0, 1.0]], np.float32)
    cmp = judged("text-classification", ref, swapped)
    assert (cmp.total, cmp.ties, cmp.top1_agreement) == (2, 1, 1.0)
    assert cmp.verdict(0.99, "row") is None
    wrong = swapped.copy()
    wrong[1] = [0.0, 3.0, 0.0]  # a confident row flipped
    cmp = judged("text-classification", ref, wrong)
    reason = cmp.verdict(0.99, "row")
    assert cmp.top1_agreement == 0.5 and reason and "on 2 row(s) (1 near tie(s)" in reason


def vocab_rows(rng: np.random.Generator, rows: int = 16, vocab: int = 1000) -> np.ndarray:
    return rng.standard_normal((rows, vocab)).astype(np.float32)


def test_fill_mask_is_judged_by_top_k_and_scores():
    rng = np.random.default_rng(0)
    ref = vocab_rows(rng)
    noisy = ref + rng.standard_normal(ref.shape).astype(np.float32) * 0.01  # int8-like noise
    cmp = judged("fill-mask", ref, noisy)
    assert cmp.topk_total == 16 * validate.TOP_K and cmp.topk_overlap == 1.0
    assert cmp.verdict(0.99, "topk") is None
    # the same top-1 everywhere, but the rest of the top-k scrambled: rejected
    scrambled = ref.copy()
    order = np.argsort(-ref, axis=-1)
    for i, row in enumerate(order):
        scrambled[i, row[1:5]] = ref[i, row[-4:]]  # 2nd..5th best become the worst
    cmp = judged("fill-mask", ref, scrambled)
    assert cmp.top1_agreement == 1.0 and cmp.topk_overlap < validate.MIN_TOPK_OVERLAP
    assert "top-5 overlap" in cmp.verdict(0.99, "topk")
    # the right candidates with the wrong probabilities (a confident row, a badly scaled copy)
    confident = ref.copy()
    confident[:, 0] = 12.0
    cmp = judged("fill-mask", confident, confident * 0.8)
    assert cmp.topk_overlap == 1.0 and cmp.score_error > validate.MAX_SCORE_ERROR
    assert "score error" in cmp.verdict(0.99, "topk")
    assert cmp.verdict(0.0, "topk") is None  # --min-agreement 0 turns the gate off


def test_a_collapsed_embedding_is_still_caught():
    """The MiniLM case (int8 sentence vectors at cosine ~0.94 to fp32) stays a failure."""
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((4, 6, 32)).astype(np.float32)
    got = ref + rng.standard_normal(ref.shape).astype(np.float32) * 0.35
    cmp = judged("feature-extraction", ref, got)
    assert cmp.cosine_min < 0.99 and "cosine agreement" in cmp.verdict(0.99, "cosine")


def test_top_k_indices_is_a_stable_argsort_prefix():
    """fill-mask and causal-lm pick their candidates by partition: the same indices, in the
    same order, as the stable full sort they replace, ties (by index) included."""
    from xlmr_serverless.runtime.ops import top_k_indices

    rng = np.random.default_rng(3)
    for size, k in ((250_002, 5), (50, 50), (50, 80), (7, 1), (1000, 100)):
        for x in (rng.standard_normal(size).astype(np.float32),
                  rng.integers(0, 4, size).astype(np.float32)):  # many ties
            np.testing.assert_array_equal(top_k_indices(x, k),
                                          np.argsort(-x, kind="stable")[:k])
