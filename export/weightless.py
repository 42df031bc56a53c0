"""The fp32 graph traced without its weights, then the weights written into `<file>.data`
one tensor at a time, straight from the torch model's (memory-mapped) parameters.

Why: the TorchScript exporter serialises every weight into one in-memory protobuf, and its
constant folding adds a transposed copy of each Linear weight: several times the checkpoint in
memory, so that XL could not be exported on a 24 GB machine
(docs/design/memory-bounded-export.md). Traced with export_params=False and no
constant folding, parameters stay graph inputs named as in the state dict, reached through
Identity (shared parameters) and Transpose (Linear weights) nodes: those are folded here into
a plan (initializer <- parameter, permutation), and each initializer is written as it is
needed, aligned for memory mapping."""
from __future__ import annotations

import contextlib
import dataclasses
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import onnx
import torch
from onnx import TensorProto

from .external import append_external


@dataclasses.dataclass(frozen=True)
class View:
    """An initializer as a view of one parameter: the parameter, permuted by `perm`."""

    source: str
    perm: tuple[int, ...] | None = None

    def then(self, perm: tuple[int, ...]) -> View:
        if self.perm is None:
            return View(self.source, perm)
        return View(self.source, tuple(self.perm[p] for p in perm))


@contextlib.contextmanager
def stand_ins(module: torch.nn.Module) -> Iterator[None]:
    """Every parameter swapped, for the trace, for a zero-strided tensor of its shape (4
    bytes of storage; shared parameters stay shared): the graph is the same, and tracing
    neither reads the checkpoint nor copies it. Each stand-in holds its own value: the
    exporter merges parameters of equal values into one input."""
    swapped: list[tuple[torch.nn.Module, str, torch.nn.Parameter]] = []
    memo: dict[int, torch.nn.Parameter] = {}
    for mod in module.modules():
        for name, p in list(mod._parameters.items()):
            if p is None:
                continue
            if id(p) not in memo:
                dtype = torch.float32 if p.is_floating_point() else p.dtype  # an fp32 graph
                value = torch.full((), float(len(memo) + 1), dtype=dtype)
                memo[id(p)] = torch.nn.Parameter(value.expand(p.shape), requires_grad=False)
            swapped.append((mod, name, p))
            mod._parameters[name] = memo[id(p)]
    try:
        yield
    finally:
        for mod, name, p in swapped:
            mod._parameters[name] = p


@contextlib.contextmanager
def shapes_without_weights() -> Iterator[None]:
    """The TorchScript exporter infers the graph's shapes by serialising it *with every
    parameter* into one ModelProto (docs/design/memory-bounded-export.md). Weights never decide a shape here
    (they are all graph inputs with their shapes known), so the pass gets no parameter values."""
    original = torch._C._jit_pass_onnx_graph_shape_type_inference

    def infer(graph: Any, params: Any, opset: int) -> Any:
        return original(graph, {}, opset)

    torch._C._jit_pass_onnx_graph_shape_type_inference = infer
    try:
        yield
    finally:
        torch._C._jit_pass_onnx_graph_shape_type_inference = original


def trace_graph(module: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path,
                **export_kw: Any) -> onnx.ModelProto:
    """The module's graph, its parameters as inputs (no weight is serialised or folded)."""
    with warnings.catch_warnings(), torch.no_grad(), stand_ins(module), \
            shapes_without_weights():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), export_params=False,
                          do_constant_folding=False, dynamo=False, **export_kw)
    proto = onnx.load(str(path))
    Path(path).unlink()
    return proto


def fold_views(graph: onnx.GraphProto, params: set[str]) -> dict[str, View]:
    """Remove the Identity and Transpose nodes that read a parameter (or such a view of one);
    returns every name the remaining graph reads as a view of a parameter."""
    views: dict[str, View] = {p: View(p) for p in params}
    keep = []
    for node in graph.node:
        src = views.get(node.input[0]) if node.input else None
        if src is not None and node.op_type == "Identity":
            views[node.output[0]] = src
        elif src is not None and node.op_type == "Transpose":
            perm = next((tuple(a.ints) for a in node.attribute if a.name == "perm"), None)
            rank = len(_shape_of(graph, src.source))
            views[node.output[0]] = src.then(perm or tuple(reversed(range(rank))))
        else:
            keep.append(node)
    canonical: dict[View, str] = {}  # one initializer per distinct view (tied weights once)
    rename = {name: canonical.setdefault(view, name) for name, view in views.items()}
    for node in keep:
        for k, name in enumerate(node.input):
            if name in rename:
                node.input[k] = rename[name]
    del graph.node[:]
    graph.node.extend(keep)
    read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    return {name: view for name, view in views.items() if name in read}


def _shape_of(graph: onnx.GraphProto, name: str) -> list[int]:
    value = next(i for i in graph.input if i.name == name)
    return [d.dim_value for d in value.type.tensor_type.shape.dim]


def placeholders(graph: onnx.GraphProto, views: dict[str, View],
                 shapes: dict[str, tuple[int, ...]]) -> None:
    """The parameter inputs become initializers carrying shape and type only (no data yet),
    so that graph rewrites (export/tied_table.py) see them; data comes in write_weights."""
    params = {v.source for v in views.values()} | set(shapes)
    kept = [i for i in graph.input if i.name not in params]
    del graph.input[:]
    graph.input.extend(kept)
    for name, view in views.items():
        shape = shapes[view.source]
        dims = [shape[p] for p in view.perm] if view.perm else list(shape)
        graph.initializer.append(TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims))


def write_weights(graph: onnx.GraphProto, views: dict[str, View],
                  tensor: Callable[[str], np.ndarray], data: Path) -> None:
    """Each placeholder's values, taken from `tensor(parameter)` and permuted, appended to
    `data` (page-aligned; the graph's tensors point there). One tensor in memory at a time."""
    data = Path(data)
    with open(data, "wb") as f:
        for init in graph.initializer:
            view = views.get(init.name)
            if view is None:
                continue
            values = tensor(view.source)
            if view.perm:
                values = values.transpose(view.perm)
            values = np.ascontiguousarray(values, dtype=np.float32)
            assert list(values.shape) == list(init.dims), (init.name, values.shape, init.dims)
            append_external(f, init, values.data, data.name)  # the array's buffer: no copy


def export_streamed(module: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path,
                    rewrite: Callable[[onnx.ModelProto, Transposer], Any] | None = None,
                    **export_kw: Any) -> Path:
    """`module` to `path` + `path.data`: graph traced weightless, views folded, `rewrite`
    given the chance to change the graph (it may transpose a placeholder through the
    Transposer it gets), then the weights streamed from the module."""
    proto = trace_graph(module, args, path, **export_kw)
    tensors = dict(module.named_parameters(remove_duplicate=False))
    tensors.update(dict(module.named_buffers(remove_duplicate=False)))
    params = {i.name for i in proto.graph.input} & set(tensors)
    views = fold_views(proto.graph, params)
    placeholders(proto.graph, views, {p: tuple(tensors[p].shape) for p in params})
    if rewrite is not None:
        rewrite(proto, Transposer(views))
    data = path.with_name(path.name + ".data")
    write_weights(proto.graph, views,
                  lambda name: tensors[name].detach().to(torch.float32).numpy(), data)
    onnx.save_model(proto, str(path))
    return path


@dataclasses.dataclass
class Transposer:
    """Lets a graph rewrite transpose a placeholder: the dims now, the data when written."""

    views: dict[str, View]

    def __call__(self, init: TensorProto) -> None:
        rank = len(init.dims)
        perm = tuple(reversed(range(rank)))
        self.views[init.name] = self.views[init.name].then(perm)
        dims = list(init.dims)
        del init.dims[:]
        init.dims.extend(reversed(dims))
