"""What every task shares: one staged call, as the transformers pipelines have it
(sanitize parameters -> preprocess -> forward -> postprocess), and the bundle it runs on.
A task fills the stages; the base class runs them and batches every input's rows together."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar, ContextManager, Iterable

import numpy as np

from .budget import INT_JSON_BYTES, UNLIMITED, Budget, text_json_bytes
from .bundle import Bundle
from .errors import BundleError, EmptyInputError, InvalidInputError
from .jsonable import to_jsonable
from .parameters import check
from .usage import Usage, meter, record

if TYPE_CHECKING:
    from .tasks.spec import TaskSpec

Options = dict[str, Any]
RowOutputs = list[np.ndarray]  # one model row's outputs, in the spec's output order


@dataclasses.dataclass
class Prepared:
    """One input ready for the model: its token rows, and what postprocess needs of it."""

    rows: list[list[int]]
    context: Any = None


def check_graph(bundle: Bundle, spec: TaskSpec) -> None:
    """The graph must compute what the task needs: its outputs' names, ranks and named axes
    as the task spec has them (a text-classification graph cannot serve fill-mask: [batch,
    labels] is not [masks, vocab])."""
    manifest, session = bundle.manifest, bundle.session
    graph = [(o.name, list(o.shape)) for o in session.get_outputs()]
    want = [(o.name, list(o.axes)) for o in spec.outputs]
    fits = len(graph) == len(want) and all(
        gn == wn and len(gs) == len(ws) and all(a is None or g == a for g, a in zip(gs, ws))
        for (gn, gs), (wn, ws) in zip(graph, want))
    if not fits:
        raise BundleError(f"the manifest says {manifest.task}, but the graph's outputs are "
                          f"{graph}; {manifest.task} needs {want} (None: any size)")


class Pipeline:
    """Base of the task pipelines: `pipe(inputs, **parameters)` as in transformers."""

    spec: ClassVar[TaskSpec]

    def __init__(self, bundle: Bundle, batch_size: int = 16, budget: Budget | None = None) -> None:
        check_graph(bundle, self.spec.with_heads(bundle.manifest.outputs))
        self.bundle = bundle
        self.tokenizer = bundle.tokenizer
        self.manifest = bundle.manifest
        self.batch_size = batch_size  # rows per forward pass (not inputs per request)
        self.budget = budget or UNLIMITED  # what one call may cost (budget.py)

    @property
    def task(self) -> str:
        return self.spec.name

    @property
    def heads(self) -> tuple[str, ...]:
        """The extra heads' outputs this bundle's graph has (its spec's `heads`)."""
        return tuple(h.name for h in self.spec.heads if h.name in self.manifest.outputs)

    def output_index(self, name: str) -> int:
        """Where the graph output `name` is among a row's outputs."""
        return self.manifest.outputs.index(name)

    @property
    def parameters(self) -> frozenset[str]:
        """The parameter names this task takes (its spec's schema)."""
        return frozenset(self.spec.parameters)

    @property
    def provider(self) -> str:
        return self.bundle.provider

    @property
    def precision(self) -> str:
        return self.bundle.precision

    @property
    def io_binding(self) -> bool:
        return self.bundle.io_binding

    def __call__(self, inputs: Any, **params: Any) -> Any:
        params = self.check_parameters(params)
        options = self.sanitize(params)
        items, shape = self.split_inputs(inputs, options)
        self.check_texts(self.texts(items, options), f"{len(items)} input(s) of {self.task}")
        prepared = self.preprocess(items, options)
        self.check_cost(prepared, options)
        outputs = self.forward(prepared)
        return self.collate([self.postprocess(p, o, options) for p, o in zip(prepared, outputs)],
                            shape, options)

    def serve(self, inputs: Any, **params: Any) -> Any:
        """The HTTP (Hugging Face Inference API) answer, JSON-ready. The same as the pipeline
        unless a task's API shape differs from its pipeline's (text-classification nests one
        list per input; zero-shot answers [{label, score}]): those tasks override this."""
        return to_jsonable(self(inputs, **params))

    # -- the stages a task fills ---------------------------------------------------------
    def sanitize(self, params: dict[str, Any]) -> Options:
        """Defaulted parameters, and the checks no schema can say (names and types were
        checked against the spec's schema)."""
        return dict(params)

    def split_inputs(self, inputs: Any, options: Options) -> tuple[list[Any], Any]:
        """The call's items, and what `collate` needs to give the answer the input's shape."""
        return as_text_list(inputs)

    def texts(self, items: list[Any], options: Options) -> list[str]:
        """Every text the call would tokenize (pairs' both sides, labels, targets): what the
        tokenizer's work is counted from before it starts."""
        return [t for x in items for t in (x if isinstance(x, tuple) else (x,))]

    def preprocess(self, items: list[Any], options: Options) -> list[Prepared]:
        raise NotImplementedError

    def forward(self, prepared: list[Prepared]) -> list[list[RowOutputs]]:
        """Every input's rows in one length-sorted, batched run; outputs regrouped per input
        (`check_cost` has counted them)."""
        flat = [row for p in prepared for row in p.rows]
        outs = self.bundle.run_rows(flat, self.batch_size, self.spec.layout)
        grouped, start = [], 0
        for p in prepared:
            grouped.append(outs[start:start + len(p.rows)])
            start += len(p.rows)
        return grouped

    def postprocess(self, prepared: Prepared, outputs: list[RowOutputs], options: Options) -> Any:
        raise NotImplementedError

    def answer_bytes(self, prepared: Prepared, options: Options) -> int:
        """An upper bound of this input's answer as JSON, checked against the budget before
        the model runs; each task says its own."""
        raise NotImplementedError

    def collate(self, results: list[Any], shape: Any, options: Options) -> Any:
        """One answer for a single input, a list for a list (`shape` from split_inputs)."""
        return results if shape else results[0]

    # -- the cost model (budget.py), counted before it is paid -------------------------------
    def check_texts(self, texts: list[str], what: str) -> None:
        """The characters the tokenizer would read, normalised, against max_input_chars:
        its time and memory grow with them (counting stops past the limit)."""
        record(chars=sum(len(t) for t in texts))
        limit = self.budget.max_input_chars
        if limit is not None:
            self.budget.check_chars(self.tokenizer.normalized_chars(texts, stop_above=limit), what)

    def check_cost(self, prepared: list[Prepared], options: Options) -> None:
        """Every row's tokens, the numbers the graph returns for them and the answer's size,
        against the budget, from the prepared rows alone (before the model runs)."""
        rows = [r for p in prepared for r in p.rows]
        what = f"{len(rows)} row(s) for {len(prepared)} input(s)"
        self.budget.check_tokens(sum(len(r) for r in rows), what)
        self.budget.check_outputs(self.bundle.output_values(rows, self.batch_size,
                                                            self.spec.layout), what)
        self.budget.check_response(sum(self.answer_bytes(p, options) for p in prepared),
                                   f"{len(prepared)} input(s) of {self.task}")

    # -- shared helpers --------------------------------------------------------------------
    def check_parameters(self, params: dict[str, Any]) -> dict[str, Any]:
        """Names, types and bounds against the spec's schema, before any work (a 422 names
        the rule); the parameters as declared (integers as int)."""
        return check(self.task, self.spec.parameters, params)

    def describe(self) -> dict[str, Any]:
        """What the bundle serves, for /health and logs."""
        m, f = self.manifest, self.bundle.model_file
        return {"model": m.name, "task": m.task, "architecture": m.architecture,
                "provider": self.provider, "precision": f.precision, "bundle_sha256": f.sha256,
                "max_length": m.max_length,
                **({"vocabulary": m.vocabulary} if m.vocabulary else {})}

    def tokenize(self, texts: list[str], add_special_tokens: bool = True) -> list[list[dict[str, Any]]]:
        """Each text's tokens as TEI's /tokenize lists them: id, piece, whether special, and
        the character span (start, stop) in the text."""
        self.check_texts(texts, f"{len(texts)} text(s) to tokenize")
        encs = self.tokenizer.encode(texts, add_special_tokens=add_special_tokens)
        self.budget.check_response(sum(tokens_json_bytes(e.tokens) for e in encs),
                                   f"{sum(len(e.ids) for e in encs)} tokens listed")
        return [[{"id": int(i), "text": tok, "special": bool(sp), "start": int(a), "stop": int(b)}
                 for i, tok, sp, (a, b) in zip(e.ids, e.tokens, e.special_tokens_mask, e.offsets)]
                for e in encs]

    def decode(self, sequences: list[list[int]], skip_special_tokens: bool = True) -> list[str]:
        """TEI's /decode: each sequence of token ids as text. The ids count as tokens against
        the budget, an id outside the vocabulary is an error, and the answer is bounded by the
        vocabulary's longest piece before any text is made."""
        total = sum(len(s) for s in sequences)
        self.budget.check_tokens(total, f"{total} id(s) to decode")
        size = self.tokenizer.backend.get_vocab_size(with_added_tokens=True)
        bad = next((i for s in sequences for i in s if not 0 <= i < size), None)
        if bad is not None:
            raise InvalidInputError(f"id {bad} is not in the vocabulary (0 to {size - 1})")
        self.budget.check_response(sum(text_json_bytes(len(s) * self.tokenizer.longest_piece)
                                       for s in sequences), f"{total} id(s) decoded")
        return [self.tokenizer.decode(s, skip_special_tokens) for s in sequences]

    def meter(self) -> ContextManager[Usage]:
        """`with pipe.meter() as usage:` counts what this thread runs in the block: tokens,
        rows, characters read, tokenizer and model time (runtime/usage.py)."""
        return meter()


def tokens_json_bytes(pieces: list[str]) -> int:
    """TEI's /tokenize entries for these pieces as JSON, at most: the fixed keys and numbers,
    and each piece's text."""
    return sum(TOKEN_ENTRY_BYTES + text_json_bytes(len(p)) for p in pieces)


TOKEN_ENTRY_BYTES = 60 + 3 * INT_JSON_BYTES  # {"id", "text", "special", "start", "stop"}


def as_text_list(inputs: Any, what: str = "inputs") -> tuple[list[str], bool]:
    """(texts, was_list): a str or a non-empty list of str, anything else a clear error."""
    if isinstance(inputs, str):
        texts, was_list = [inputs], False
    elif isinstance(inputs, (list, tuple)):
        texts, was_list = list(inputs), True
    else:
        raise InvalidInputError(f"{what} must be a string or a list of strings, "
                                f"got {type(inputs).__name__}")
    if not texts:
        raise EmptyInputError(f"{what} is empty")
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise InvalidInputError(f"{what} must be strings, got {bad[0]}")
    return texts, was_list


def as_item_list(inputs: Any) -> tuple[list[Any], bool]:
    """(items, was_list) for tasks whose items are objects: one item or a non-empty list."""
    items = inputs if isinstance(inputs, list) else [inputs]
    if not items:
        raise EmptyInputError("inputs is empty")
    return items, isinstance(inputs, list)


def one_of(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not isinstance(value, str) or value.lower() not in choices:
        raise InvalidInputError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value.lower()
