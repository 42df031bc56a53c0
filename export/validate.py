"""Checks after every export: the ONNX file against PyTorch (parity) and each quantized file
against fp32 (the accuracy gate), on real tokenized multilingual text, padded batches."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..runtime.tasks.spec import TaskSpec

# Built-in validation text: Latin, Cyrillic, Greek, Arabic, Hebrew, Devanagari, CJK, Thai, emoji.
DEFAULT_TEXTS = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Paris is the capital of France and its largest city.",
    "Der Vertrag wurde gestern in Berlin unterzeichnet.",
    "La economía de España creció un tres por ciento el año pasado.",
    "Москва — столица России и крупнейший город страны.",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "القاهرة هي عاصمة مصر وأكبر مدنها.",
    "ירושלים היא עיר עתיקה מאוד.",
    "भारत एक विशाल और विविधतापूर्ण देश है।",
    "東京は日本の首都であり、世界最大の都市圏の一つです。",
    "北京是中华人民共和国的首都。",
    "서울은 대한민국의 수도입니다.",
    "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
    "I love this product 😍🔥 — would buy again!",
    "Ok.",
    "Machine learning models are often deployed behind HTTP endpoints on serverless platforms "
    "where cold start time and memory use matter as much as raw throughput, so smaller and "
    "faster graphs translate directly into lower cost for every request that is served.",
)


def read_texts(path: Path | None) -> list[str]:
    """The user's validation file (one text a line) or the built-in multilingual set."""
    if path is None:
        return list(DEFAULT_TEXTS)
    lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    return [ln for ln in lines if ln] or list(DEFAULT_TEXTS)


def encode_batches(tokenizer: Any, texts: list[str], spec: TaskSpec, mask_token_id: int | None,
                   pad_token_id: int, max_length: int, sizes: tuple[int, ...] = (1, 3, 4),
                   ) -> Iterator[dict[str, np.ndarray]]:
    """Feeds of several batch sizes, each padded to its longest row (so padding is tested);
    a mask_rows graph's rows get a <mask>, a choices axis groups two choices a prompt."""
    choices = len(spec.inputs) == 3
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    rows = [e.ids for e in tokenizer.encode_batch(texts)]
    if spec.graph == "mask_rows" and mask_token_id is not None:
        rows = [r[:len(r) // 2] + [mask_token_id] + r[len(r) // 2 + 1:] if len(r) > 2 else r
                for r in rows]
    start = 0
    for size in sizes * len(rows):
        if choices:
            size = 2 * max(1, size // 2)
        chunk = rows[start:start + size]
        if len(chunk) < size:
            return
        start += size
        width = max(len(r) for r in chunk)
        ids = np.full((len(chunk), width), pad_token_id, dtype=np.int64)
        for i, r in enumerate(chunk):
            ids[i, :len(r)] = r
        mask = (ids != pad_token_id).astype(np.int64)
        feed: dict[str, np.ndarray] = {"input_ids": ids, "attention_mask": mask}
        if choices:
            feed = {k: v.reshape(-1, 2, width) for k, v in feed.items()}
        yield feed


@dataclasses.dataclass
class Comparison:
    """Agreement of one model's outputs with a reference over all validation batches."""

    max_abs_diff: float = 0.0
    agree: int = 0
    total: int = 0
    cosine_min: float = 1.0

    @property
    def top1_agreement(self) -> float:
        return self.agree / self.total if self.total else 1.0

    def as_dict(self) -> dict[str, float]:
        d = {"max_abs_diff": self.max_abs_diff, "top1_agreement": self.top1_agreement}
        if self.cosine_min < 1.0:
            d["cosine_min"] = self.cosine_min
        return d


def compare(ref: list[np.ndarray], got: list[np.ndarray], feed: dict[str, np.ndarray],
            spec: TaskSpec, acc: Comparison) -> Comparison:
    """Fold one batch into `acc` by the spec's parity measure: max |diff| on real positions,
    and top-1 agreement (or the cosine of mean-pooled sentences)."""
    mask = feed["attention_mask"]
    judge = JUDGES[spec.parity]
    for r, g in zip(ref, got):
        judge(r, g, mask, acc)
    return acc


def _cosine(r: np.ndarray, g: np.ndarray, mask: np.ndarray, acc: Comparison) -> None:
    """Hidden states: mean-pooled sentence vectors must point the same way (>= 0.99)."""
    m = mask.astype(bool)
    acc.max_abs_diff = max(acc.max_abs_diff, float(np.abs(r[m] - g[m]).max()))
    w = mask[..., None].astype(np.float32)
    a, b = (r * w).sum(1) / w.sum(1), (g * w).sum(1) / w.sum(1)
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    acc.cosine_min = min(acc.cosine_min, float(cos.min()))
    acc.agree += int((cos >= 0.99).sum())
    acc.total += len(cos)


def _span(r: np.ndarray, g: np.ndarray, mask: np.ndarray, acc: Comparison) -> None:
    """Start/end logits: the same best position per row, padding excluded."""
    m = mask.astype(bool)
    acc.max_abs_diff = max(acc.max_abs_diff, float(np.abs(r[m] - g[m]).max()))
    rr, gg = np.where(m, r, -np.inf), np.where(m, g, -np.inf)
    acc.agree += int((rr.argmax(-1) == gg.argmax(-1)).sum())
    acc.total += len(rr)


def _top1(rr: np.ndarray, gg: np.ndarray, acc: Comparison) -> None:
    if rr.size:
        acc.max_abs_diff = max(acc.max_abs_diff, float(np.abs(rr - gg).max()))
        acc.agree += int((rr.argmax(-1) == gg.argmax(-1)).sum())
        acc.total += len(rr)


JUDGES: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray, Comparison], None]] = {
    "cosine": _cosine,
    "span": _span,
    # per real (unpadded) token, and per output row
    "token": lambda r, g, mask, acc: _top1(r[mask.astype(bool)], g[mask.astype(bool)], acc),
    "row": lambda r, g, mask, acc: _top1(r.reshape(-1, r.shape[-1]), g.reshape(-1, g.shape[-1]),
                                         acc),
}


def onnx_session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return session.run(None, feed)


def run_torch(wrapper: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        out = wrapper(torch.from_numpy(feed["input_ids"]), torch.from_numpy(feed["attention_mask"]))
    out = out if isinstance(out, tuple) else (out,)
    return [o.numpy() for o in out]
