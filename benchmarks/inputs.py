"""Benchmark inputs from the real tokenizer on real multilingual sentences, cut to exactly the
wanted number of tokens (specials included); fill-mask rows carry one <mask>."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from xlmr_serverless.runtime.tokenization import TextTokenizer

SENTENCES = (
    "The committee in Geneva approved the new budget for renewable energy projects.",
    "Le gouvernement français a présenté hier un plan pour les transports publics.",
    "Die Universität München eröffnet im Herbst ein neues Forschungszentrum.",
    "El museo de Madrid recibió más de dos millones de visitantes el año pasado.",
    "Московский метрополитен перевёз рекордное число пассажиров.",
    "يعمل الباحثون في القاهرة على مشروع جديد للطاقة الشمسية.",
    "東京の新しい図書館は多くの学生に利用されています。",
    "हिंदी भारत की सबसे अधिक बोली जाने वाली भाषाओं में से एक है।",
    "Η Αθήνα φιλοξένησε ένα διεθνές συνέδριο για την τεχνητή νοημοσύνη.",
    "北京的科技公司正在开发新的人工智能应用。",
)


def token_rows(tokenizer: TextTokenizer, n_tokens: int, rows: int, cls: int, sep: int,
               mask_id: int | None) -> np.ndarray:
    """`rows` rows of exactly n_tokens ids: <s> + real sentence pieces + </s>."""
    body = []
    for enc in tokenizer.encode(list(SENTENCES) * 50, add_special_tokens=False):
        body += enc.ids
        if len(body) > (n_tokens + rows) * 2:
            break
    out = np.empty((rows, n_tokens), dtype=np.int64)
    for r in range(rows):
        start = (r * 7) % max(1, len(body) - n_tokens)
        out[r] = [cls] + body[start:start + n_tokens - 2] + [sep]
        if mask_id is not None:
            out[r, n_tokens // 2] = mask_id
    return out


ACCURACY_TEXT = Path(__file__).resolve().parent / "texts" / "accuracy.txt"
HELD_OUT = "held_out"  # the accuracy case's name: never timed


def write_held_out(tokenizer: TextTokenizer, specials: dict[str, int], task: str,
                   max_length: int, folder: Path) -> dict:
    """The accuracy case: every sentence of texts/accuracy.txt (in none of the export's
    validation or calibration text) as one padded batch; fill-mask rows carry a <mask> mid-row."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = [t for t in ACCURACY_TEXT.read_text(encoding="utf-8").splitlines() if t.strip()]
    rows = [e.ids[:max_length] for e in tokenizer.encode(texts)]
    mask_id = specials.get("mask") if task == "fill-mask" else None
    pad = specials.get("pad", 1)
    ids = np.full((len(rows), max(len(r) for r in rows)), pad, dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = r, 1
        if mask_id is not None and len(r) > 2:
            ids[i, len(r) // 2] = mask_id
    np.save(folder / f"{HELD_OUT}.ids.npy", ids)
    np.save(folder / f"{HELD_OUT}.mask.npy", mask)
    return {"name": HELD_OUT, "batch": len(rows), "seq": ids.shape[1],
            "ids": str(folder / f"{HELD_OUT}.ids.npy"), "mask": str(folder / f"{HELD_OUT}.mask.npy")}


def write_cases(bundle: Path, tokenizer: TextTokenizer, specials: dict[str, int],
                batch_sizes: list[int], seq_lens: list[int], task: str, folder: Path) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    cls = specials.get("cls", specials.get("bos", 0))
    sep = specials.get("sep", specials.get("eos", 2))
    mask_id = specials.get("mask") if task == "fill-mask" else None
    cases = []
    for b in batch_sizes:
        for s in seq_lens:
            ids = token_rows(tokenizer, s, b, cls, sep, mask_id)
            name = f"b{b}_s{s}"
            np.save(folder / f"{name}.ids.npy", ids)
            np.save(folder / f"{name}.mask.npy", np.ones_like(ids))
            cases.append({"name": name, "batch": b, "seq": s, "ids": str(folder / f"{name}.ids.npy"),
                          "mask": str(folder / f"{name}.mask.npy")})
    return cases
