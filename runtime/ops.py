"""Numeric post-processing as small numpy functions (float32 throughout, as the pipelines do)."""
from __future__ import annotations

import numpy as np


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Max-subtracted softmax (what every transformers pipeline but zero-shot uses)."""
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """Sentence embedding from token embeddings [batch, seq, dim] as sentence-transformers
    pools them: 'cls' (first token), 'mean' (masked mean), 'max' (masked max)."""
    if mode == "cls":
        return hidden[:, 0]
    m = mask[..., None].astype(hidden.dtype)
    if mode == "mean":
        return (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
    if mode == "max":
        return np.where(m > 0, hidden, -1e9).max(1)
    raise ValueError(f"unknown pooling {mode!r}")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """x / max(||x||, 1e-12), as torch.nn.functional.normalize."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def top_k_indices(x: np.ndarray, k: int) -> np.ndarray:
    """The indices of a 1-D array's k largest values, largest first, ties by index: what a
    stable full argsort's first k are, without sorting 250,002 scores to keep 5 (a partition,
    then a stable sort of the few at or above the k-th value)."""
    k = min(k, x.shape[-1])
    if k >= x.shape[-1]:
        return np.argsort(-x, kind="stable")
    kth = np.partition(x, x.shape[-1] - k)[x.shape[-1] - k]
    candidates = np.flatnonzero(x >= kth)
    return candidates[np.argsort(-x[candidates], kind="stable")][:k]
