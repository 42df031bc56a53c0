"""Vocabulary trimming (as vocabtrimmer, EMNLP 2023): keep the special tokens and every piece
the tokenizer produces on a corpus (plus the N best-scored pieces if asked), then rebuild the
embedding — and the tied LM head — with only those rows, and a tokenizer.json whose ids match.

Why it is exact on the corpus: a Unigram tokenizer picks the best-scoring segmentation; every
piece of that segmentation is kept, and removing other pieces only removes other paths, so the
same pieces come out, renumbered (ties aside). Text outside the corpus still tokenizes: its
pieces fall back to smaller kept ones, or to <unk>. Unigram (XLM-R) only: byte-level BPE
(RoBERTa) would need its merges rebuilt consistently, which this does not do.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .errors import ExportError


@dataclasses.dataclass(frozen=True)
class Trim:
    """The kept pieces (old ids, ascending: new id = position) and what to report of them."""

    kept: tuple[int, ...]
    total: int  # pieces before

    def new_id(self, old: int) -> int:
        new = int(np.searchsorted(np.asarray(self.kept), old))
        if new >= len(self.kept) or self.kept[new] != old:
            raise ExportError(f"piece {old} was not kept by the vocabulary trim")
        return new


def corpus_lines(path: Path) -> list[str]:
    lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    texts = [ln for ln in lines if ln]
    if not texts:
        raise ExportError(f"trim corpus {path} has no text")
    return texts


def choose(tokenizer_json: dict[str, Any], texts: Iterable[str], keep_top: int = 0,
           scripts: frozenset[str] | None = None) -> Trim:
    """Specials (every added token), each piece the tokenizer produces on `texts`, the
    `keep_top` best-scored pieces (Unigram scores are log-probabilities: the most frequent),
    and with `scripts` every piece whose letters are all in them (export/languages.py)."""
    from tokenizers import Tokenizer

    model = tokenizer_json["model"]
    if model.get("type") != "Unigram":
        raise ExportError(f"--trim-vocab supports Unigram tokenizers (XLM-R); this one is "
                          f"{model.get('type')} (byte-level BPE merges are not rebuilt)")
    tok = Tokenizer.from_str(json.dumps(tokenizer_json))
    keep = {t["id"] for t in tokenizer_json.get("added_tokens", [])}
    if model.get("unk_id") is not None:
        keep.add(int(model["unk_id"]))
    for enc in tok.encode_batch(list(texts), add_special_tokens=True):
        keep.update(enc.ids)
    if keep_top:
        scores = np.array([s for _, s in model["vocab"]])
        keep.update(int(i) for i in np.argsort(-scores, kind="stable")[:keep_top])
    if scripts is not None:
        from .languages import piece_scripts

        keep.update(i for i, (piece, _) in enumerate(model["vocab"])
                    if piece_scripts(piece) <= scripts)
    return Trim(tuple(sorted(keep)), len(model["vocab"]))


def tokenizer(tokenizer_json: dict[str, Any], trim: Trim) -> dict[str, Any]:
    """The tokenizer.json with only the kept pieces, every id in it renumbered."""
    data = json.loads(json.dumps(tokenizer_json))  # a deep copy
    vocab = data["model"]["vocab"]
    data["model"]["vocab"] = [vocab[i] for i in trim.kept]
    if data["model"].get("unk_id") is not None:
        data["model"]["unk_id"] = trim.new_id(data["model"]["unk_id"])
    for t in data.get("added_tokens", []):
        t["id"] = trim.new_id(t["id"])
    for special in (data.get("post_processor") or {}).get("special_tokens", {}).values():
        special["ids"] = [trim.new_id(i) for i in special["ids"]]
    return data


def model(torch_model: Any, trim: Trim) -> None:
    """The embedding's rows, and a tied LM head's weight and bias, cut to the kept pieces in
    place (config.vocab_size and the special ids follow)."""
    import torch

    rows = torch.as_tensor(trim.kept)
    emb = torch_model.get_input_embeddings()
    if emb.padding_idx is not None and trim.new_id(emb.padding_idx) != emb.padding_idx:
        # RoBERTa counts positions from the padding id: it must not move
        raise ExportError("the trim would renumber the padding token; keep the ids before it")
    new = torch.nn.Embedding(len(trim.kept), emb.embedding_dim,
                             padding_idx=None if emb.padding_idx is None
                             else trim.new_id(emb.padding_idx))
    new.weight = torch.nn.Parameter(emb.weight.detach()[rows].clone())
    torch_model.set_input_embeddings(new)
    head = getattr(torch_model, "lm_head", None)
    if head is not None:
        decoder = head.decoder
        tied = decoder.weight is emb.weight
        bias = decoder.bias if decoder.bias is not None else head.bias
        out = torch.nn.Linear(emb.embedding_dim, len(trim.kept), bias=False)
        out.weight = new.weight if tied else torch.nn.Parameter(decoder.weight.detach()[rows])
        head.decoder = out
        if bias is not None:
            head.bias = torch.nn.Parameter(bias.detach()[rows].clone())
            head.decoder.bias = head.bias
    remap_config(torch_model.config, trim)


def remap_config(config: Any, trim: Trim) -> None:
    """vocab_size and the special ids of a transformers config, for the trimmed vocabulary."""
    config.vocab_size = len(trim.kept)
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if getattr(config, name, None) is not None:
            setattr(config, name, trim.new_id(getattr(config, name)))


def coverage(tokenizer_json: dict[str, Any], trim: Trim, texts: Iterable[str]) -> float:
    """Share of the pieces the untrimmed tokenizer produces on `texts` that survived."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(json.dumps(tokenizer_json))
    ids = [i for enc in tok.encode_batch(list(texts), add_special_tokens=False) for i in enc.ids]
    kept = set(trim.kept)
    return sum(i in kept for i in ids) / len(ids) if ids else 1.0
