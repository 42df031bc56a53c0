"""Extractive question-answering, as transformers 4.57's pipelines/question_answering.py (5.x
removed it): question-first windows over the context with doc_stride, CLS inside the softmax,
spans up to max_answer_len tokens, word alignment, case-insensitive duplicate merging."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..budget import FLOAT_JSON_BYTES, INT_JSON_BYTES, text_json_bytes
from ..errors import EmptyInputError, InvalidInputError
from ..parameters import BOOL, POSITIVE_INT, TEXT, TEXTS, choice, either, nullable
from ..pipeline import Options, Pipeline, Prepared, RowOutputs
from .spec import Output, TaskSpec

SPEC = TaskSpec(
    name="question-answering", auto_class="AutoModelForQuestionAnswering",
    head="ForQuestionAnswering", parity="span", truncation={},
    outputs=(Output("start_logits", ("batch", "sequence")),
             Output("end_logits", ("batch", "sequence"))),
    sample={"inputs": {"question": "Where do I live?",
                       "context": "My name is Wolfgang and I live in Berlin."}},
    parameters={"top_k": POSITIVE_INT, "doc_stride": nullable(POSITIVE_INT),
                "max_answer_len": POSITIVE_INT, "max_seq_len": nullable(POSITIVE_INT),
                # accepted and unused, as in the pipeline's fast-tokenizer path
                "max_question_len": nullable(POSITIVE_INT),
                "handle_impossible_answer": BOOL, "align_to_words": BOOL,
                "padding": nullable(either(BOOL, choice("longest", "max_length", "do_not_pad"))),
                "question": nullable(either(TEXT, TEXTS)), "context": nullable(either(TEXT, TEXTS))},
    optimum_class="ORTModelForQuestionAnswering")


# an answer's fixed part: {"score", "start", "end", "answer"} and its numbers
ANSWER_BYTES = 48 + FLOAT_JSON_BYTES + 2 * INT_JSON_BYTES


def decode_spans(start: np.ndarray, end: np.ndarray, topk: int, max_answer_len: int,
                 undesired_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best (start, end) spans with end >= start and length <= max_answer_len. As 4.57, except
    that k == number of candidates sorts instead of crashing (transformers #44327)."""
    if start.ndim == 1:
        start = start[None]
    if end.ndim == 1:
        end = end[None]
    outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
    flat = candidates.flatten()
    idx_sort: Any
    if topk == 1:
        idx_sort = [np.argmax(flat)]
    elif len(flat) <= topk:
        idx_sort = np.argsort(-flat)
    else:
        idx = np.argpartition(-flat, topk)[0:topk]
        idx_sort = idx[np.argsort(-flat[idx])]
    starts, ends = np.unravel_index(idx_sort, candidates.shape)[1:]
    keep = np.isin(starts, undesired_tokens.nonzero()) & np.isin(ends, undesired_tokens.nonzero())
    starts, ends = starts[keep], ends[keep]
    return starts, ends, candidates[0, starts, ends]


def select_starts_ends(start: np.ndarray, end: np.ndarray, p_mask: np.ndarray,
                       attention_mask: np.ndarray, min_null_score: float, top_k: int,
                       handle_impossible_answer: bool, max_answer_len: int) -> tuple:
    """Softmax the logits over allowed tokens (context and CLS), track the null score."""
    undesired = np.abs(p_mask - 1) & attention_mask
    masked = undesired == 0.0
    start = np.where(masked, -10000.0, start)
    end = np.where(masked, -10000.0, end)
    start = np.exp(start - start.max(axis=-1, keepdims=True))
    start = start / start.sum()
    end = np.exp(end - end.max(axis=-1, keepdims=True))
    end = end / end.sum()
    if handle_impossible_answer:
        min_null_score = min(min_null_score, (start[0, 0] * end[0, 0]).item())
    start[0, 0] = end[0, 0] = 0.0
    starts, ends, scores = decode_spans(start, end, top_k, max_answer_len, undesired)
    return starts, ends, scores, min_null_score


def char_span(enc: Any, s: int, e: int, align_to_words: bool) -> tuple[int, int]:
    """Character span of tokens s..e in the context: whole words when aligning, else offsets."""
    if align_to_words:
        try:
            return (enc.word_to_chars(enc.token_to_word(s), sequence_index=1)[0],
                    enc.word_to_chars(enc.token_to_word(e), sequence_index=1)[1])
        except Exception:
            pass
    return enc.offsets[s][0], enc.offsets[e][1]


def window_chars(enc: Any) -> int:
    """Characters of the context a window covers, its first and last words whole."""
    context = [i for i, sid in enumerate(enc.sequence_ids) if sid == 1]
    if not context:
        return 0
    start, end = char_span(enc, context[0], context[-1], align_to_words=True)
    return end - start


def normalize_examples(inputs: Any, question: Any, context: Any) -> tuple[list[dict[str, str]], bool]:
    """The argument forms of QuestionAnsweringArgumentHandler -> ([{question, context}], single)."""
    if inputs is None:
        if question is None or context is None:
            raise InvalidInputError("question-answering needs a question and a context")
        if isinstance(question, list) and isinstance(context, str):
            inputs = [{"question": q, "context": context} for q in question]
        elif isinstance(question, list) and isinstance(context, list):
            if len(question) != len(context):
                raise InvalidInputError("Questions and contexts don't have the same lengths")
            inputs = [{"question": q, "context": c} for q, c in zip(question, context)]
        elif isinstance(question, str) and isinstance(context, str):
            inputs = {"question": question, "context": context}
        else:
            raise InvalidInputError("question must be a string or a list, context a string or a list")
    items = [inputs] if isinstance(inputs, dict) else inputs
    if not isinstance(items, list) or not items:
        raise EmptyInputError("question-answering inputs are {\"question\": ..., \"context\": ...}")
    for item in items:
        if not isinstance(item, dict):
            raise InvalidInputError('each input must be {"question": str, "context": str}')
        for k in ("question", "context"):
            if not isinstance(item.get(k), str) or not item[k]:
                raise InvalidInputError(f"`{k}` must be a non-empty string")
    return items, len(items) == 1


class QuestionAnsweringPipeline(Pipeline):
    spec = SPEC

    def __call__(self, inputs: Any = None, **params: Any) -> Any:
        """`pipe({"question", "context"})`, a list of them, or question=/context= keywords."""
        return super().__call__(inputs, **params)

    def sanitize(self, params: dict[str, Any]) -> Options:
        top_k = params.get("top_k", 1)
        self.budget.check_top_k(top_k)
        max_answer_len = params.get("max_answer_len", 15)
        max_seq_len = params.get("max_seq_len") or min(self.manifest.max_length, 384)
        if max_seq_len > self.manifest.max_length:
            raise InvalidInputError(f"max_seq_len must be at most {self.manifest.max_length}")
        doc_stride = params.get("doc_stride") or max(min(max_seq_len // 2, 128), 1)
        if doc_stride > max_seq_len:
            raise InvalidInputError(f"`doc_stride` ({doc_stride}) is larger than `max_seq_len` "
                                    f"({max_seq_len})")
        return {"top_k": top_k, "max_answer_len": max_answer_len, "max_seq_len": max_seq_len,
                "doc_stride": doc_stride, "question": params.get("question"),
                "context": params.get("context"),
                "impossible": bool(params.get("handle_impossible_answer", False)),
                "align": bool(params.get("align_to_words", True))}

    def split_inputs(self, inputs: Any, options: Options) -> tuple[list[Any], Any]:
        examples, single = normalize_examples(inputs, options["question"], options["context"])
        return examples, not single

    def preprocess(self, items: list[Any], options: Options) -> list[Prepared]:
        """Question-first windows over each context, `doc_stride` tokens of overlap."""
        prepared = []
        for x in items:
            self.check_windows(x["question"], x["context"], options)
            windows = self.windows(x["question"], x["context"], options["max_seq_len"],
                                   options["doc_stride"])
            prepared.append(Prepared([w.ids for w in windows], (windows, x["context"])))
        return prepared

    def check_windows(self, question: str, context: str, options: Options) -> None:
        """How many windows the context will need, counted before they are built (a long
        context with a doc_stride close to max_seq_len makes thousands of them), and the
        rule tokenizers holds them to: the stride shorter than the context's room."""
        q, c = (len(e.ids) for e in self.tokenizer.pieces([question, context]))
        added, max_seq_len, stride = self.tokenizer.added_tokens(pair=True), \
            options["max_seq_len"], options["doc_stride"]
        room = max_seq_len - q - added  # <s> question </s></s> context </s>
        if q + c + added <= max_seq_len:
            return  # one window, nothing cut
        if room < 1:
            raise InvalidInputError(f"the question ({q} tokens) leaves no room for the context "
                                    f"in max_seq_len {max_seq_len} ({added} special tokens)")
        if stride >= room:  # tokenizers' own rule (beyond it, it panics)
            raise InvalidInputError(f"doc_stride must be less than {room}: max_seq_len "
                                    f"{max_seq_len} less the question's {q} tokens and {added} "
                                    f"special tokens. Given: {stride}")
        windows = 1 + -(-(c - room) // (room - stride))
        self.budget.check_tokens(windows * max_seq_len,
                                 f"{windows} window(s) of up to {max_seq_len} tokens over a "
                                 f"{c}-token context, doc_stride {stride}")

    def windows(self, question: str, context: str, max_seq_len: int, doc_stride: int) -> list[Any]:
        try:
            enc = self.tokenizer.encode([(question, context)], truncation="only_second",
                                        max_length=max_seq_len, stride=doc_stride)[0]
        except Exception as exc:  # tokenizers: the question alone does not fit
            raise InvalidInputError(f"the question is too long for max_seq_len {max_seq_len}: "
                                    f"{exc}") from exc
        return [enc, *enc.overflowing]

    def texts(self, items: list[Any], options: Options) -> list[str]:
        return [t for x in items for t in (x["question"], x["context"])]

    def answer_bytes(self, prepared: Prepared, options: Options) -> int:
        """top_k answers (and the empty one), each a span inside one window: at most the
        widest window's context, from its first to its last word."""
        windows, _ = prepared.context
        widest = max((window_chars(w) for w in windows), default=0)
        return options["top_k"] * (ANSWER_BYTES + text_json_bytes(widest)) + ANSWER_BYTES

    def postprocess(self, prepared: Prepared, outputs: list[RowOutputs], options: Options) -> Any:
        """The best spans over all windows, duplicates (case-insensitive) merged."""
        windows, context = prepared.context
        top_k, align = options["top_k"], options["align"]
        cls = self.bundle.specials.get("cls", self.bundle.specials.get("bos"))
        min_null = 1000000.0
        answers: list[dict[str, Any]] = []
        pre_topk = top_k * 2 + 10 if align else top_k
        for enc, (start, end) in zip(windows, outputs):
            p_mask = np.array([[sid != 1 for sid in enc.sequence_ids]], dtype=np.int64)
            ids = np.array(enc.ids)
            if cls is not None:
                p_mask[0, ids == cls] = 0
            attention = np.ones((1, len(ids)), dtype=np.int64)
            starts, ends, scores, min_null = select_starts_ends(
                start[None].astype(np.float32), end[None].astype(np.float32), p_mask, attention,
                min_null, pre_topk, options["impossible"], options["max_answer_len"])
            for s, e, score in zip(starts, ends, scores):
                a, b = char_span(enc, int(s), int(e), align)
                text = context[a:b]
                same = next((x for x in answers if x["answer"].lower() == text.lower()), None)
                if same:
                    same["score"] += score.item()
                else:
                    answers.append({"score": score.item(), "start": a, "end": b, "answer": text})
        if options["impossible"]:
            answers.append({"score": min_null, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda x: x["score"], reverse=True)[:top_k]
        return answers[0] if len(answers) == 1 else answers
