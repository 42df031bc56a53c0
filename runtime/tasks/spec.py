"""A task's facts as data, torch-free: the graph's inputs and outputs with their dynamic axes,
how export builds and judges it, how the runtime splits its outputs back into rows, which
parameters ask for truncation, a sample request and the HTTP routes it serves. Each task
module declares one `SPEC`; export/, lambda/, the CLI and benchmarks/ read it."""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping

from ..parameters import Schema

# how export computes the graph's outputs from the Hugging Face model
Graph = Literal["model", "mask_rows", "lm_head", "splade"]
# how a quantized or exported file is judged against its reference
Parity = Literal["cosine", "span", "token", "row", "topk", "sparse", "vectors"]
# how one forward pass's outputs split back into the rows that were sent
Layout = Literal["token", "row", "mask"]

SEQUENCE_INPUTS = ("batch", "sequence")
INPUT_NAMES = ("input_ids", "attention_mask")


@dataclasses.dataclass(frozen=True)
class Output:
    """One named graph output and its axes (a name for each dynamic axis, None if fixed)."""

    name: str
    axes: tuple[str | None, ...]
    parity: Parity | None = None  # how this output is judged (None: as its task's spec says)

    def dynamic_axes(self) -> dict[int, str]:
        return {i: a for i, a in enumerate(self.axes) if a}


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Everything that makes a task, besides its pipeline's code."""

    name: str
    auto_class: str  # transformers class export loads
    head: str | None  # architectures suffix that carries the head (None: any checkpoint)
    outputs: tuple[Output, ...]
    parity: Parity
    sample: Mapping[str, Any]  # a /predict body that the task answers
    # the pipeline's parameters, each as JSON Schema: checked on every call, published in the
    # OpenAPI document (runtime/parameters.py)
    parameters: Mapping[str, Schema] = dataclasses.field(default_factory=dict)
    inputs: tuple[str, ...] = SEQUENCE_INPUTS  # axes of input_ids and attention_mask
    graph: Graph = "model"
    labelled: bool = False  # carries id2label / label2id from the config
    requires: str | None = None  # a config property the checkpoint must have (see export)
    truncation: Mapping[str, Any] | None = None  # parameters that ask this pipeline to truncate
    truncation_hint: str = ""  # said when truncation is asked of a task that has none
    routes: tuple[str, ...] = ("/predict",)  # POST routes that serve this task
    # the route SageMaker's /invocations answers with, as TEI dispatches it
    natural_route: str = "/predict"
    optimum_class: str | None = None  # optimum.onnxruntime class (benchmarks)
    # outputs a checkpoint's extra heads add after the task's own (BGE-M3's sparse and ColBERT
    # layers): a bundle's graph has those its manifest lists, in this order
    heads: tuple[Output, ...] = ()

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    def with_heads(self, names: tuple[str, ...] | list[str]) -> TaskSpec:
        """This spec with the extra heads among `names` as outputs after its own."""
        extra = tuple(h for h in self.heads if h.name in names)
        return dataclasses.replace(self, outputs=self.outputs + extra) if extra else self

    @property
    def layout(self) -> Layout:
        """'mask' ([masks, vocab]), 'token' ([batch, sequence, ...]) or 'row' ([batch, ...])."""
        axes = self.outputs[0].axes
        if axes[0] == "masks":
            return "mask"
        return "token" if "sequence" in axes else "row"

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """torch.onnx.export's dynamic_axes for this task's inputs and outputs."""
        seq = {i: a for i, a in enumerate(self.inputs)}
        return {**{n: seq for n in INPUT_NAMES}, **{o.name: o.dynamic_axes() for o in self.outputs}}


def logits(*axes: str | None) -> tuple[Output, ...]:
    """The common single `logits` output."""
    return (Output("logits", axes),)
