"""One writer per precision, named by the precision registry (runtime/precisions.py): each
turns the validated fp32 graph into the bundle's file of that precision, weights inline or in
`<file>.data`, and says which recipe it used."""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any, Callable

from ..runtime.precisions import Precision
from ..runtime.tasks.spec import TaskSpec
from . import gate, quantize
from .validate import Comparison


@dataclasses.dataclass
class WriteJob:
    """What a writer needs: the fp32 graph, where to write, and how to judge the result."""

    fp32: Path
    dst: Path
    external: bool  # weights in <dst>.data
    spec: TaskSpec
    config: Any  # the checkpoint's transformers config (sizes for the int8 recipes)
    feeds: list[dict[str, Any]]  # validation batches
    min_agreement: float
    log: Callable[[str], None]
    table_bits: int = 8  # the word-embedding table's bits in int8/int4 files (export/table4.py)
    calibration: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # never judged
    calibration_note: str = ""  # where the calibration text came from (export/calibration.py)
    search_off: str = ""  # why the int8 gate may not keep and time candidates (too large)

    @property
    def search(self) -> bool:
        return not self.search_off


@dataclasses.dataclass
class WriteResult:
    recipe: str | None = None
    parity: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra manifest figures


Writer = Callable[[WriteJob], WriteResult]


def writer_for(precision: Precision) -> Writer:
    """The function the registry names ("module:function" inside this package)."""
    module, _, name = precision.writer.partition(":")
    fn: Writer = getattr(importlib.import_module(f"{__package__}.{module}"), name)
    return fn


def write_fp32(job: WriteJob) -> WriteResult:
    """The fp32 graph as a bundle file, its weights copied tensor by tensor into the file's
    own `.data` (or inline)."""
    from .external import load_graph, save_consolidated

    save_consolidated(load_graph(job.fp32), job.dst, job.fp32.resolve().parent, job.external)
    return WriteResult()


def write_int8(job: WriteJob) -> WriteResult:
    """Dynamic int8 through the accuracy gate: the fastest file that agrees with fp32."""
    recipe, tried, found = gate.int8_with_gate(job)
    return WriteResult(recipe, {"int8_recipes_tried": tried,
                                "int8_gate": {**gate.rules(job), **found}})


def write_fp16(job: WriteJob) -> WriteResult:
    quantize.convert_fp16(job.fp32, job.dst, job.external)
    return WriteResult()


def write_int4(job: WriteJob) -> WriteResult:
    """Weight-only int4 (embedding int8, or 4-bit at --table-bits 4) through the gate."""
    recipe, tried = gate.int4_with_gate(job)
    return WriteResult(recipe, {"int4_recipes_tried": tried, "int4_gate": gate.rules(job)})


def judge(reference: Callable[[dict[str, Any]], list[Any]], path: Path,
          feeds: list[dict[str, Any]], spec: TaskSpec) -> Comparison:
    """A file's outputs on the validation feeds against `reference`'s, by the spec's measure."""
    from . import validate

    sess = validate.onnx_session(path)
    acc = validate.Comparison()
    for feed in feeds:
        validate.compare(reference(feed), validate.run_onnx(sess, feed), feed, spec, acc)
    return acc
