"""token-classification (NER), as transformers' pipelines/token_classification.py: the same
sub-word heuristic, word aggregation, BIO grouping, ignore_labels after grouping, and stride
windows merged by overlap. Scores are numpy.float32, as there. A text over the model's limit
without `stride` is an error rather than silently cut."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..budget import FLOAT_JSON_BYTES, INT_JSON_BYTES, piece_json_bytes, text_json_bytes
from ..errors import InputTooLongError, InvalidInputError
from ..ops import softmax
from ..parameters import POSITIVE_INT, TEXTS, choice, nullable
from ..pipeline import Options, Pipeline, Prepared, RowOutputs
from .spec import TaskSpec, logits

STRATEGIES = ("none", "simple", "first", "average", "max")

SPEC = TaskSpec(
    name="token-classification", auto_class="AutoModelForTokenClassification",
    head="ForTokenClassification", outputs=logits("batch", "sequence", None), parity="token",
    labelled=True, truncation_hint="pass stride (with an aggregation_strategy) to cover long texts",
    sample={"inputs": "My name is Wolfgang and I live in Berlin.",
            "parameters": {"aggregation_strategy": "simple"}},
    parameters={"aggregation_strategy": nullable(choice(*STRATEGIES)),
                "ignore_labels": nullable(TEXTS), "stride": nullable(POSITIVE_INT)},
    optimum_class="ORTModelForTokenClassification")


def get_tag(name: str) -> tuple[str, str]:
    if name.startswith("B-"):
        return "B", name[2:]
    if name.startswith("I-"):
        return "I", name[2:]
    return "I", name


# an entity's fixed part: {"entity", "score", "index", "word", "start", "end"} and its numbers
ENTITY_BYTES = 80 + FLOAT_JSON_BYTES + 3 * INT_JSON_BYTES


def window_count(tokens: int, room: int, stride: int) -> int:
    """How many windows tokenizers cuts `tokens` into, `room` tokens each, `stride` shared."""
    return 1 + max(0, -(-(tokens - room) // (room - stride)))


def window_tokens(tokens: int, room: int, stride: int, windows: int) -> int:
    """The tokens of those windows together, special tokens not counted: every window is
    full but the last, which runs to the end."""
    if windows == 1:
        return tokens
    return (windows - 1) * room + tokens - (windows - 1) * (room - stride)


def overlap_merge(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entities of overlapping stride windows: keep the longer (then higher-scored) one."""
    if not entities:
        return entities
    entities = sorted(entities, key=lambda x: x["start"])
    out, prev = [], entities[0]
    for e in entities:
        if prev["start"] <= e["start"] < prev["end"]:
            longer = e["end"] - e["start"] > prev["end"] - prev["start"]
            same = e["end"] - e["start"] == prev["end"] - prev["start"]
            if longer or same and e["score"] > prev["score"]:
                prev = e
        else:
            out.append(prev)
            prev = e
    out.append(prev)
    return out


class TokenClassificationPipeline(Pipeline):
    spec = SPEC

    def sanitize(self, params: dict[str, Any]) -> Options:
        strategy = (params.get("aggregation_strategy") or "none").lower()
        ignore = params.get("ignore_labels")
        ignore = ["O"] if ignore is None else ignore
        stride = params.get("stride")
        room = self.manifest.max_length - self.tokenizer.added_tokens()
        if stride is not None:
            if stride >= room:  # tokenizers' own rule (beyond it, it panics)
                raise InvalidInputError(
                    f"stride must be less than {room} (the model's {self.manifest.max_length} "
                    f"positions less {self.manifest.max_length - room} special tokens). "
                    f"Given: {stride}")
            if strategy == "none":
                raise InvalidInputError("stride needs an aggregation_strategy other than none")
        return {"strategy": strategy, "ignore": frozenset(ignore), "stride": stride}

    def preprocess(self, items: list[str], options: Options) -> list[Prepared]:
        """Each sentence as one row, or as overlapping windows when `stride` is given; a
        sentence over the limit without a stride is an error rather than silently cut. The
        windows are counted from a first tokenization before they are built by a second (the
        rows need encode's own offsets, which `pair_ids` does not keep)."""
        limit, stride = self.manifest.max_length, options["stride"]
        added = self.tokenizer.added_tokens()
        pieces = self.tokenizer.pieces(items)
        for e in pieces:
            n = len(e.ids) + added
            if stride is None and n > limit:
                raise InputTooLongError(
                    f"inputs must have at most {limit} tokens. Given: {n} (the model's "
                    f"{limit} positions). Pass stride (with an aggregation_strategy) to "
                    "cover it all")
        if stride is not None:
            windows = [window_count(len(e.ids), limit - added, stride) for e in pieces]
            self.budget.check_tokens(
                sum(n * added + window_tokens(len(e.ids), limit - added, stride, n)
                    for n, e in zip(windows, pieces)),
                f"{sum(windows)} window(s) of up to {limit} tokens, stride {stride}")
        prepared = []
        for sentence, enc in zip(items, self.tokenizer.encode(
                items, truncation="longest_first", max_length=limit, stride=stride or 0)):
            rows = [enc, *enc.overflowing] if stride else [enc]
            prepared.append(Prepared([w.ids for w in rows], (sentence, rows)))
        return prepared

    def answer_bytes(self, prepared: Prepared, options: Options) -> int:
        """At most an entity per token, each naming a label and the token's text."""
        _, windows = prepared.context
        label = max((len(v) for v in (self.manifest.id2label or {}).values()), default=1)
        return sum(len(w.ids) * ENTITY_BYTES + piece_json_bytes(w.tokens) for w in windows) + \
            sum(len(w.ids) for w in windows) * text_json_bytes(label)

    def postprocess(self, prepared: Prepared, outputs: list[RowOutputs],
                    options: Options) -> list[Any]:
        sentence, windows = prepared.context
        ignore = options["ignore"]
        entities: list[dict[str, Any]] = []
        for w, out in zip(windows, outputs):
            scores = softmax(out[0].astype(np.float32))
            pre = self.gather_pre_entities(sentence, w, scores)
            entities += [e for e in self.aggregate(pre, options["strategy"])
                         if e.get("entity") not in ignore and e.get("entity_group") not in ignore]
        return overlap_merge(entities) if len(windows) > 1 else entities

    def gather_pre_entities(self, sentence: str, enc: Any, scores: np.ndarray) -> list[dict[str, Any]]:
        unk = self.bundle.specials.get("unk")
        by_prefix = bool(self.tokenizer.continuing_subword_prefix)
        pre = []
        for idx, (tid, special, (start, end)) in enumerate(zip(enc.ids, enc.special_tokens_mask,
                                                                enc.offsets)):
            if special:
                continue
            word = self.tokenizer.id_to_token(tid) or ""
            ref = sentence[start:end]
            if by_prefix:
                is_subword = len(word) != len(ref)
            else:
                is_subword = start > 0 and " " not in sentence[start - 1:start + 1]
            if tid == unk:
                word, is_subword = ref, False
            pre.append({"word": word, "scores": scores[idx], "start": start, "end": end,
                        "index": idx, "is_subword": is_subword})
        return pre

    def aggregate(self, pre: list[dict[str, Any]], strategy: str) -> list[dict[str, Any]]:
        id2label = self.manifest.id2label or {}
        if strategy in ("none", "simple"):
            entities = []
            for p in pre:
                i = int(p["scores"].argmax())
                entities.append({"entity": id2label[i], "score": p["scores"][i], "index": p["index"],
                                 "word": p["word"], "start": p["start"], "end": p["end"]})
            return entities if strategy == "none" else self.group_entities(entities)
        return self.group_entities(self.aggregate_words(pre, strategy))

    def aggregate_words(self, pre: list[dict[str, Any]], strategy: str) -> list[dict[str, Any]]:
        words, group = [], None
        for p in pre:
            if group is None:
                group = [p]
            elif p["is_subword"]:
                group.append(p)
            else:
                words.append(self.aggregate_word(group, strategy))
                group = [p]
        if group is not None:
            words.append(self.aggregate_word(group, strategy))
        return words

    def aggregate_word(self, group: list[dict[str, Any]], strategy: str) -> dict[str, Any]:
        id2label = self.manifest.id2label or {}
        if strategy == "first":
            scores = group[0]["scores"]
        elif strategy == "max":
            scores = max(group, key=lambda e: e["scores"].max())["scores"]
        else:
            scores = np.nanmean(np.stack([e["scores"] for e in group]), axis=0)
        i = int(scores.argmax())
        return {"entity": id2label[i], "score": scores[i],
                "word": self.tokenizer.tokens_to_string([e["word"] for e in group]),
                "start": group[0]["start"], "end": group[-1]["end"]}

    def group_entities(self, entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = []
        current: list[dict[str, Any]] = []
        for e in entities:
            if not current:
                current.append(e)
                continue
            bi, tag = get_tag(e["entity"])
            _, last_tag = get_tag(current[-1]["entity"])
            if tag == last_tag and bi != "B":
                current.append(e)
            else:
                groups.append(self.group_sub_entities(current))
                current = [e]
        if current:
            groups.append(self.group_sub_entities(current))
        return groups

    def group_sub_entities(self, entities: list[dict[str, Any]]) -> dict[str, Any]:
        scores = np.nanmean([e["score"] for e in entities])
        return {"entity_group": entities[0]["entity"].split("-", 1)[-1], "score": np.mean(scores),
                "word": self.tokenizer.tokens_to_string([e["word"] for e in entities]),
                "start": entities[0]["start"], "end": entities[-1]["end"]}
