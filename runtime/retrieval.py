"""BGE-M3's sparse and multi-vector outputs, and their scores, as FlagEmbedding's
BGEM3FlagModel computes them: small numpy functions over one text's rows."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .ops import l2_normalize

# the special tokens whose weights FlagEmbedding drops from lexical weights
UNUSED_SPECIALS = ("cls", "eos", "pad", "unk")
# compute_score's keys, in its order
SCORE_MODES = ("colbert", "sparse", "dense", "sparse+dense", "colbert+sparse+dense")


def lexical_weights(weights: np.ndarray, ids: Iterable[int], unused: set[int]) -> dict[str, float]:
    """One text's token weights [tokens] -> {token id as str: weight}: the largest weight
    per id, zero weights and the unused special tokens left out."""
    out: dict[str, float] = {}
    for w, i in zip(weights.tolist(), ids):
        if i not in unused and w > 0:
            key = str(i)
            if w > out.get(key, 0.0):
                out[key] = w
    return out


def sparse_pairs(lexical: dict[str, float]) -> list[dict[str, float | int]]:
    """Lexical weights as TEI's sparse embedding: [{"index", "value"}], by index."""
    return [{"index": int(k), "value": v} for k, v in sorted(lexical.items(), key=lambda kv: int(kv[0]))]


def colbert_vectors(vecs: np.ndarray, normalize: bool = True) -> np.ndarray:
    """One text's ColBERT rows [tokens, dim] -> [tokens - 1, dim]: every token's but the
    first (CLS), each L2-normalised."""
    rest = vecs[1:].astype(np.float32)
    return l2_normalize(rest) if normalize else rest


def lexical_score(a: dict[str, float], b: dict[str, float]) -> float:
    """The sum of weight products over the token ids both texts have."""
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    return float(sum(w * large[k] for k, w in small.items() if k in large))


def colbert_score(q: np.ndarray, p: np.ndarray) -> float:
    """Late interaction: each query vector's best dot product with the passage's, averaged
    over the query's vectors."""
    if not len(q) or not len(p):
        return 0.0
    return float((q @ p.T).max(-1).sum() / len(q))


def combined_scores(dense: float, sparse: float, colbert: float,
                    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> dict[str, float]:
    """compute_score's five scores for one pair; `weights` are dense, sparse, colbert."""
    wd, ws, wc = weights
    return {"colbert": colbert, "sparse": sparse, "dense": dense,
            "sparse+dense": (sparse * ws + dense * wd) / (ws + wd),
            "colbert+sparse+dense": (colbert * wc + sparse * ws + dense * wd) / (wd + ws + wc)}
