"""One writer per precision of the runtime's registry (runtime/precisions.py): each turns
the validated fp32 graph into the bundle's file of that precision, weights inline or in
`<file>.data`, and says which recipe it used. WRITERS registers them against the registry's
names (a test holds the two to the same set)."""
from __future__ import annotations

from ..runtime.precisions import Precision
from . import gate, quantize
from .job import WriteJob, Writer, WriteResult


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


# the precisions whose writer takes the unfused fp32 graph (the others: fused, unless the
# fusions are clearly slower, timed at export): MatMulNBits quantizes MatMul weights, and
# onnxruntime's fused Attention would keep Q, K and V in fp32
UNFUSED = frozenset({"int4"})

WRITERS: dict[str, Writer] = {"int8": write_int8, "fp32": write_fp32, "int4": write_int4,
                              "fp16": write_fp16}


def writer_for(precision: Precision) -> Writer:
    """The writer registered for the registry's `precision`."""
    return WRITERS[precision.name]
