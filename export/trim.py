"""Vocabulary trimming (as vocabtrimmer, EMNLP 2023): keep the special tokens and every piece
the tokenizer produces on a corpus (plus the N best-scored pieces if asked), then rebuild the
embedding — and the tied LM head — with only those rows, and a tokenizer.json whose ids match.

Why it is exact on the corpus: a Unigram tokenizer picks the best-scoring segmentation; every
piece of that segmentation is kept, and removing other pieces only removes other paths, so the
same pieces come out, renumbered (ties aside). Text outside the corpus still tokenizes: its
pieces fall back to smaller kept ones, or to <unk>.

Byte-level BPE (RoBERTa) is exact the same way once the kept pieces are closed under the merges
that build them (`bpe_closure`): a word's merges each produce a kept piece from kept parts, so
they all survive, and at every step the lowest-ranked applicable merge is still the one the
full tokenizer applied (the kept merges are a subset, in their order). The 256 byte symbols are
always kept: any other text falls back to shorter pieces, down to single bytes, and decodes to
itself (no <unk>).
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
    kind = model.get("type")
    if kind not in ("Unigram", "BPE"):
        raise ExportError(f"--trim-vocab supports Unigram (XLM-R) and byte-level BPE (RoBERTa) "
                          f"tokenizers; this one is {kind}")
    tok = Tokenizer.from_str(json.dumps(tokenizer_json))
    keep = {t["id"] for t in tokenizer_json.get("added_tokens", [])}
    if model.get("unk_id") is not None:
        keep.add(int(model["unk_id"]))
    for enc in tok.encode_batch(list(texts), add_special_tokens=True):
        keep.update(enc.ids)
    if kind == "BPE":
        pieces = bpe_pieces(model)
        if keep_top:  # BPE numbers pieces in merge order: the most frequent first
            keep.update(range(min(keep_top, len(pieces))))
        if scripts is not None:
            from .languages import piece_scripts

            text = byte_level_text(tokenizer_json, pieces)
            keep.update(i for i, t in enumerate(text) if piece_scripts(t) <= scripts)
        return Trim(tuple(sorted(bpe_closure(model, keep))), len(pieces))
    if keep_top:
        scores = np.array([s for _, s in model["vocab"]])
        keep.update(int(i) for i in np.argsort(-scores, kind="stable")[:keep_top])
    if scripts is not None:
        from .languages import piece_scripts

        keep.update(i for i, (piece, _) in enumerate(model["vocab"])
                    if piece_scripts(piece) <= scripts)
    return Trim(tuple(sorted(keep)), len(model["vocab"]))


def bpe_pieces(model: dict[str, Any]) -> list[str]:
    """A BPE model's pieces in id order (its vocab is a piece -> id map with ids 0..n-1)."""
    pieces = sorted(model["vocab"], key=model["vocab"].__getitem__)
    if [model["vocab"][p] for p in pieces] != list(range(len(pieces))):
        raise ExportError("the BPE vocabulary's ids are not 0..n-1: cannot renumber it")
    return pieces


def bpe_merges(model: dict[str, Any]) -> list[tuple[str, str]]:
    """The merges in rank order, whichever way tokenizer.json spells them ("a b" or [a, b])."""
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1])  # type: ignore[misc]
            for m in model["merges"]]


def bpe_closure(model: dict[str, Any], keep: set[int]) -> set[int]:
    """`keep` plus the byte-level alphabet and both parts of every merge that builds a kept
    piece, recursively: every merge a kept piece's derivation uses then survives."""
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = model["vocab"]
    made_of: dict[str, list[tuple[str, str]]] = {}
    for a, b in bpe_merges(model):
        made_of.setdefault(a + b, []).append((a, b))
    kept = set(keep) | {vocab[c] for c in ByteLevel.alphabet() if c in vocab}
    pieces = bpe_pieces(model)
    todo = [pieces[i] for i in kept]
    while todo:
        for pair in made_of.get(todo.pop(), ()):
            for part in pair:
                if part in vocab and vocab[part] not in kept:
                    kept.add(vocab[part])
                    todo.append(part)
    return kept


def byte_level_text(tokenizer_json: dict[str, Any], pieces: list[str]) -> list[str]:
    """What each byte-level piece spells, by the tokenizer's own decoder (a piece that ends
    inside a character spells that character as U+FFFD, which has no script)."""
    from tokenizers import decoders

    decoder = decoders.ByteLevel()
    return [decoder.decode([p]) for p in pieces]


def tokenizer(tokenizer_json: dict[str, Any], trim: Trim) -> dict[str, Any]:
    """The tokenizer.json with only the kept pieces, every id in it renumbered."""
    data = json.loads(json.dumps(tokenizer_json))  # a deep copy
    model = data["model"]
    if model["type"] == "BPE":
        pieces = bpe_pieces(model)
        model["vocab"] = {pieces[old]: new for new, old in enumerate(trim.kept)}
        model["merges"] = [m for m, (a, b) in zip(model["merges"], bpe_merges(model))
                           if a in model["vocab"] and b in model["vocab"]
                           and a + b in model["vocab"]]
    else:
        vocab = model["vocab"]
        model["vocab"] = [vocab[i] for i in trim.kept]
    if model.get("unk_id") is not None:
        model["unk_id"] = trim.new_id(model["unk_id"])
    for t in data.get("added_tokens", []):
        t["id"] = trim.new_id(t["id"])
    _renumber_processor(data.get("post_processor"), trim)
    return data


def _renumber_processor(processor: dict[str, Any] | None, trim: Trim) -> None:
    """The special ids a post-processor adds: TemplateProcessing's `special_tokens`,
    Roberta/BertProcessing's `cls`/`sep` pairs, and those inside a Sequence."""
    if not processor:
        return
    for special in processor.get("special_tokens", {}).values():
        special["ids"] = [trim.new_id(i) for i in special["ids"]]
    for key in ("cls", "sep"):
        if isinstance(processor.get(key), list):
            processor[key][1] = trim.new_id(processor[key][1])
    for inner in processor.get("processors", []):
        _renumber_processor(inner, trim)


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
