"""A loaded bundle: manifest checked, tokenizer and onnxruntime session loaded in parallel
(the two slow parts of a cold start), provider and precision chosen and said out loud."""
from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, ContextManager, TypeVar

import numpy as np

from . import precisions as registry
from . import usage
from .binding import bound_run, use_io_binding
from .cpu import isa
from .errors import BundleError, InputTooLongError
from .manifest import Manifest, ModelFile, read_manifest, verify_files
from .session import choose_provider, create_session
from .tokenization import TextTokenizer, pad_batch, special_ids
from .verify import verify_once

log = logging.getLogger("xlmr.runtime")
T = TypeVar("T")

@dataclasses.dataclass
class Bundle:
    folder: Path
    manifest: Manifest
    tokenizer: TextTokenizer
    session: Any
    provider: str
    model_file: ModelFile
    specials: dict[str, int]
    input_names: tuple[str, ...]
    io_binding: bool = False  # inputs/outputs bound on the device (CUDA by default)
    # how long each phase of the load took, ms (tokenizer, session and verify overlap: see
    # open_bundle); `load` is the whole, wall clock
    timings: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def precision(self) -> str:
        return self.model_file.precision

    @functools.cached_property
    def output_width(self) -> int:
        """The last dimension of the graph's first output (hidden size, labels, vocabulary);
        read once, not on every request."""
        width = self.session.get_outputs()[0].shape[-1]
        return width if isinstance(width, int) else 1024

    @property
    def pad_id(self) -> int:
        return self.specials.get("pad", 1)

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> list[np.ndarray]:
        """One forward pass; the feed is built from the graph's own input names."""
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.input_names:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        feed = {n: feed[n] for n in self.input_names}
        t0 = time.perf_counter()
        outputs = bound_run(self.session, feed, self.provider) if self.io_binding else \
            list(self.session.run(None, feed))
        usage.record(tokens=int(attention_mask.sum()), rows=int(np_rows(input_ids)),
                     inference_ms=(time.perf_counter() - t0) * 1000)
        return outputs

    def warm_up(self, lengths: tuple[int, ...] = (8, 64, 256)) -> dict[str, float]:
        """One forward pass per sequence length (a <mask> mid-row where the vocabulary has
        one), so that the first request after a snapshot restore finds onnxruntime's buffers
        allocated and the weights read; returns ms per length."""
        import time

        rank = len(self.session.get_inputs()[0].shape)
        out = {}
        for n in sorted({min(n, self.manifest.max_length) for n in lengths}):
            ids = np.full((1,) * (rank - 1) + (n,), self.pad_id, dtype=np.int64)
            if "mask" in self.specials:
                ids[..., n // 2] = self.specials["mask"]
            t0 = time.perf_counter()
            self.run(ids, np.ones_like(ids))
            out[str(n)] = round((time.perf_counter() - t0) * 1000, 1)
        return out

    def run_rows(self, rows: list[list[int]], batch_size: int,
                 layout: str = "token") -> list[list[np.ndarray]]:
        """Forward many rows: sorted by length so padding stays small, cut into batches,
        padded to each batch's longest row; returns each row's outputs in the caller's order.
        `layout` says how outputs split back into rows: 'token' ([batch, seq, ...], cut to the
        row's length), 'row' ([batch, ...]) or 'mask' ([masks, vocab], the <mask> rows in order)."""
        for r in rows:
            self.check_length(len(r))
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        results: list[list[np.ndarray]] = [[] for _ in rows]
        mask_id = self.specials.get("mask")
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            ids, mask = pad_batch([rows[i] for i in idx], self.pad_id)
            outs = self.run(ids, mask)
            offset = 0
            for j, i in enumerate(idx):
                if layout == "token":
                    results[i] = [o[j, :len(rows[i])] for o in outs]
                elif layout == "row":
                    results[i] = [o[j] for o in outs]
                else:
                    n = int((ids[j] == mask_id).sum())
                    results[i] = [o[offset:offset + n] for o in outs]
                    offset += n
        return results

    @functools.cached_property
    def output_shapes(self) -> list[list[int | str | None]]:
        """The graph's outputs' shapes: an int where fixed, the axis name where dynamic."""
        return [list(o.shape) for o in self.session.get_outputs()]

    def output_values(self, rows: list[list[int]], batch_size: int, layout: str = "token") -> int:
        """How many numbers the graph returns for these rows, run as run_rows runs them
        (sorted, padded per batch): a row axis counts the rows, a sequence axis the padded
        length, a `masks` axis the <mask> tokens; fixed axes their size."""
        padded = padded_tokens(rows, batch_size)
        masks = sum(r.count(self.specials["mask"]) for r in rows) if layout == "mask" else 0
        total = 0
        for shape in self.output_shapes:
            per = 1
            for axis in shape[1:]:
                per *= axis if isinstance(axis, int) else 1
            first = masks if layout == "mask" else padded if len(shape) > 1 and \
                not isinstance(shape[1], int) and layout == "token" else len(rows)
            total += first * per
        return total

    def check_length(self, n: int) -> None:
        limit = self.manifest.max_length
        if n > limit:
            raise InputTooLongError(f"inputs must have at most {limit} tokens. Given: {n} "
                                    f"(the model's {limit} positions)")

    def meter(self) -> ContextManager[usage.Usage]:
        """Count what this thread runs inside the block (runtime/usage.py)."""
        return usage.meter()


def padded_tokens(rows: list[list[int]], batch_size: int) -> int:
    """The positions the graph runs for these rows as run_rows batches them: sorted by
    length, cut into `batch_size` batches, each padded to its longest row."""
    lengths = sorted(len(r) for r in rows)
    return sum(len(b) * b[-1] for b in (lengths[i:i + batch_size]
                                         for i in range(0, len(lengths), batch_size)))


def np_rows(input_ids: np.ndarray) -> int:
    """Model rows in a feed: batch x choices for 3-D (multiple-choice) input."""
    return int(np.prod(input_ids.shape[:-1]))


def open_bundle(folder: str | Path, provider: str = "auto", precision: str | None = None,
                threads: int | None = None, verify: bool = True,
                io_binding: bool | None = None,
                started: threading.Event | None = None) -> Bundle:
    """Load a bundle folder. `verify` checks sha256 of every file (sizes are always checked);
    `io_binding` None binds inputs and outputs on the device where that pays (CUDA).
    `started`, if given, is set once the load's imports are done and onnxruntime's session
    build runs without the GIL: from then on the load holds the GIL only for the tokenizer's
    build, and a caller's own imports contend with nothing else."""
    t0 = time.perf_counter()
    folder = Path(folder)
    manifest = read_manifest(folder)  # checked against its digest
    verify_files(manifest, folder, full=False)  # every file there, at its size
    timings = {"manifest": _ms(t0)}
    t = time.perf_counter()
    import onnxruntime as ort  # after the cheap checks: a bad folder is reported at once
    timings["import_onnxruntime"] = _ms(t)
    want = choose_provider(provider, ort.get_available_providers())
    precision = precision or registry.preferred(manifest.precisions, want)
    model_file = manifest.file_for(precision)
    meant_for = registry.get(precision).provider
    if want == "cuda" and meant_for == "cpu":
        log.warning("%s is a CPU precision and runs slowly on the CUDA provider; prefer %s",
                    precision, registry.preferred(manifest.precisions, "cuda"))
    # side by side: onnxruntime builds the session without the GIL, the tokenizer holds the
    # GIL for all of its build (tokenizers' Rust code), so the tokenizer starts only once the
    # session is in its native build; the sha256 of every file runs beside both (hashlib
    # lets go of the GIL), and nothing is served unless it passed
    t = time.perf_counter()
    native = threading.Event()
    with ThreadPoolExecutor(max_workers=3) as pool:
        sess = pool.submit(_timed, create_session, folder / model_file.path, want, threads,
                           provider == "cuda", native)
        hashed = pool.submit(_timed, verify_once, manifest, folder) if verify else None
        native.wait()
        if started is not None:
            started.set()
        tok = pool.submit(_timed, TextTokenizer, folder / manifest.tokenizer["file"],
                          manifest.tokenizer.get("clean_up_tokenization_spaces", False))
        (tokenizer, timings["tokenizer"]), ((session, used), timings["session"]) = \
            tok.result(), sess.result()
        if hashed is not None:
            rehashed, ms = hashed.result()
            timings["verify" if rehashed else "verify_marker"] = ms
    timings["overlapped"] = _ms(t)  # tokenizer, session and verify side by side
    if used != want and meant_for == "cuda":
        raise BundleError(f"the {precision} file is for CUDA; on CPU load precision "
                          f"{registry.preferred(manifest.precisions, 'cpu')}")
    bind = use_io_binding(io_binding, used)
    log.info("bundle %s: task %s, provider %s, precision %s, io binding %s", manifest.name,
             manifest.task, used, precision, "on" if bind else "off")
    tuned = (manifest.tuned_on or {}).get("isa")
    if used == "cpu" and tuned and tuned != isa():
        log.warning("bundle %s was tuned and judged on %s; this CPU is %s (kernels differ: its "
                    "timings and int8 rounding may too; re-export on this ISA to tune it)",
                    manifest.name, tuned, isa())
    timings["load"] = _ms(t0)
    return Bundle(folder=folder, manifest=manifest, tokenizer=tokenizer, session=session,
                  provider=used, model_file=model_file,
                  specials=special_ids(manifest.special_tokens),
                  input_names=tuple(i.name for i in session.get_inputs()), io_binding=bind,
                  timings=timings)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)


def _timed(fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    """fn(*args) and how long it took, ms (for the phases of a cold start)."""
    t = time.perf_counter()
    return fn(*args), _ms(t)
