"""Activation smoothing in the manner of SmoothQuant (Xiao et al., 2023): a few channels of a
MatMul's input carry most of its range (XLM-R's and BERT's outlier dimensions), which leaves
the rest a few of dynamic int8's 256 levels. Dividing channel j by s_j and multiplying row j
of the weights by s_j computes the same product with a flatter input; the division is folded
into the LayerNorm that produced the input where nothing else reads it, else one Mul."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph_index import index

ALPHA = 0.5  # how much of the range moves into the weights (SmoothQuant's default)
SCALE_RANGE = (1e-4, 1e4)
# a normalization's output scale and shift (input positions), where the division can be folded
NORM_AFFINE = {"LayerNormalization": (1, 2), "SkipLayerNormalization": (2, 3),
               "EmbedLayerNormalization": (5, 6)}
WEIGHTED = ("MatMul", "Attention")  # ops whose input 1 is a [in, out] weight


@dataclasses.dataclass(frozen=True)
class Site:
    """One activation to smooth and the weighted nodes reading it."""

    tensor: str
    nodes: tuple[str, ...]
    weights: tuple[str, ...]
    norm: str | None  # the normalization that produced it (its output 0), if any


def sites(proto: onnx.ModelProto, which: str) -> list[Site]:
    """The inputs of MatMul/Attention nodes whose weight is a constant [in, out] read by that
    node alone (a tied head's table is not: the embedding reads it too); "norm" keeps those a
    normalization produced (the residual stream, where outlier channels live), "all" every one."""
    graph = proto.graph
    g = index(graph)
    inits = g.initializers
    found: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        if n.op_type in WEIGHTED and len(n.input) > 1 and n.input[1] in inits \
                and len(inits[n.input[1]].dims) == 2 and g.reads(n.input[1]) == 1:
            found.setdefault(n.input[0], []).append(n)
    out = []
    for tensor, nodes in found.items():
        maker = g.producer.get(tensor)
        normalized = maker is not None and maker.op_type in NORM_AFFINE and \
            maker.output[0] == tensor  # not a normalization's other outputs (its skip sum)
        norm = maker.name if maker is not None and normalized else None
        if which == "norm" and norm is None:
            continue
        out.append(Site(tensor, tuple(n.name for n in nodes), tuple(n.input[1] for n in nodes),
                        norm))
    return out


def scales(absmax: np.ndarray, weight_rowmax: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """s_j = max|X_j|^alpha / max|W_j|^(1-alpha), 1 where a channel never fires or has no
    weight (nothing to balance)."""
    a = np.asarray(absmax, np.float64)
    w = np.asarray(weight_rowmax, np.float64)
    live = (a > 0) & (w > 0)
    s = np.ones_like(a)
    s[live] = a[live] ** alpha / w[live] ** (1 - alpha)
    return np.clip(s, *SCALE_RANGE).astype(np.float32)


def smooth(src: Path, dst: Path, chosen: list[Site], absmax: dict[str, np.ndarray],
           alpha: float = ALPHA) -> list[dict[str, Any]]:
    """`src` with each site smoothed, written to `dst` in the same folder (weights read one at
    a time and written as they are scaled); returns, per site, where the division went and
    the input's peak-to-median channel range before and after."""
    from .external import append_external, load_graph, read_array, save_consolidated

    folder = Path(src).resolve().parent
    proto = load_graph(src)
    graph = proto.graph
    g = index(graph)
    inits, readers = g.initializers, g.readers
    nodes = {n.name: n for n in graph.node}
    outputs = {o.name for o in graph.output}
    side = folder / f"{Path(dst).name}.smoothed.data"  # scaled weights, until consolidated
    record = []
    with open(side, "wb") as out:
        for site in chosen:
            a = absmax[site.tensor]
            rowmax = np.zeros_like(a)
            for w in site.weights:
                rowmax = np.maximum(rowmax, np.abs(read_array(inits[w], str(folder))).max(1))
            s = scales(a, rowmax, alpha)
            for w in site.weights:
                scaled = (read_array(inits[w], str(folder)) * s[:, None]).astype(np.float32)
                append_external(out, inits[w], scaled.tobytes(), side.name)
            folded = _fold(site, s, nodes, inits, readers, outputs, folder)
            if not folded:
                _divide(graph, site, s, nodes)
            flat = a / s
            record.append({"tensor": site.tensor, "nodes": list(site.nodes),
                           "divided_in": f"{site.norm} (folded)" if folded else "Mul",
                           "peak_over_median": [round(float(a.max() / max(np.median(a), 1e-12)), 1),
                                                round(float(flat.max() / max(np.median(flat), 1e-12)), 1)]})
    save_consolidated(proto, dst, folder)
    side.unlink()
    return record


def _fold(site: Site, s: np.ndarray, nodes: dict[str, onnx.NodeProto], inits: dict[str, Any],
          readers: dict[str, list[onnx.NodeProto]], outputs: set[str], folder: Path) -> bool:
    """Divide the normalization's scale and shift by s, where only the smoothed nodes read
    its output and only it reads its scale and shift."""
    from .external import read_array

    if site.norm is None or site.tensor in outputs:
        return False
    norm = nodes[site.norm]
    if {n.name for n in readers[site.tensor]} != set(site.nodes):
        return False
    affine = [norm.input[i] for i in NORM_AFFINE[norm.op_type] if i < len(norm.input)
              and norm.input[i]]
    if not affine or any(t not in inits or len(readers[t]) != 1 for t in affine):
        return False
    for t in affine:
        inits[t].CopyFrom(numpy_helper.from_array(
            (read_array(inits[t], str(folder)) / s).astype(np.float32), t))
    return True


def _divide(graph: onnx.GraphProto, site: Site, s: np.ndarray,
            nodes: dict[str, onnx.NodeProto]) -> None:
    """One Mul by 1/s that the smoothed nodes read instead of the tensor."""
    name = f"{site.tensor}_smoothed"
    graph.initializer.append(numpy_helper.from_array((1 / s).astype(np.float32), f"{name}_inv"))
    first = min(list(graph.node).index(nodes[n]) for n in site.nodes)
    graph.node.insert(first, helper.make_node("Mul", [site.tensor, f"{name}_inv"], [name],
                                              name=f"{name}_Mul"))
    for n in site.nodes:
        nodes[n].input[0] = name
