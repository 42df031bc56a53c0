"""Per-token activation scales for dynamic int8: onnxruntime's dynamic quantization gives a
MatMul's whole input one scale, set by its largest value, so a token carrying outlier
activations (the `<s>` attention sink, `</s>`, punctuation), or a longer batchmate's, leaves
every other token a few int8 levels: a text's answer then depends on what it is batched
with. Dividing each token by its own peak before the quantized MatMul and multiplying the
product back makes the one scale every token's own: the same fp32 function, all int8
(docs/int8.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import calibration
from .graph_index import index

EPS = 1e-6  # a token of zeros (padding) divides by this, not by zero
# GELU's outputs are never below -0.16997 (x * Phi(x) at x = -0.75; the tanh form alike): a
# token's peak |x| after them is its largest value, floored here, which saves a pass of Abs
GELU_OPS, GELU_FLOOR = ("Gelu", "BiasGelu", "FastGelu"), 0.17
NORMS = ("LayerNormalization", "SkipLayerNormalization", "EmbedLayerNormalization")


def matmuls(proto: onnx.ModelProto, which: str, hidden: int, intermediate: int) -> list[str]:
    """The MatMuls with a constant weight that `which` names ("ffn": the FFN's up- and
    down-projections, by weight shape; "all": every one). A fused Attention mixes tokens
    after its product, so it cannot take the scales back: never chosen."""
    from .quantize import ffn_matmuls

    if which == "ffn":
        return ffn_matmuls(proto, hidden, intermediate)
    inits = index(proto.graph).initializers
    return [n.name for n in proto.graph.node
            if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in inits]


def token_spread(model: Path, feeds: list[dict[str, Any]], nodes: list[str]) -> dict[str, float]:
    """Per node, why it needs per-token scales: its input's largest token peak over the
    median token peak, on the feeds' real tokens (calibration text, batched as the gate
    batches)."""
    from .external import load_graph

    reads = {n.name: n.input[0] for n in load_graph(model).graph.node if n.name in nodes}
    peaks = calibration.token_peaks(model, feeds, sorted(set(reads.values())))
    return {node: round(float(peaks[t].max() / max(float(np.median(peaks[t])), 1e-12)), 1)
            for node, t in reads.items() if t in peaks}


def rescale(src: Path, dst: Path, nodes: list[str]) -> None:
    """`src` with each named MatMul y = x @ W written as y = ((x / p) @ W) * p, p each token's
    largest |x| (at least EPS), and the padding positions zeroed where the encoder starts
    (masked keys, they change no real token, but their values would set scales of the
    MatMuls left per-tensor); to `dst` in the same folder (weights untouched)."""
    from .external import load_graph, save_consolidated

    proto = load_graph(src)
    graph = proto.graph
    wanted = set(nodes)
    if not wanted:
        raise ValueError("no MatMul to rescale")
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 17)
    producer = index(graph).producer
    graph.initializer.extend([numpy_helper.from_array(np.array(EPS, np.float32), "per_token.eps"),
                              numpy_helper.from_array(np.array(GELU_FLOOR, np.float32),
                                                      "per_token.gelu_floor")])
    if opset >= 18:  # ReduceMax's axes became an input
        graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64),
                                                         "per_token.axes"))
    out: list[onnx.NodeProto] = []
    for n in graph.node:
        if n.name not in wanted:
            out.append(n)
            continue
        x, p = n.input[0], n.name
        after_gelu = x in producer and producer[x].op_type in GELU_OPS
        reduce = [x if after_gelu else p + "/abs"] + (["per_token.axes"] if opset >= 18 else [])
        kw: dict[str, Any] = {"keepdims": 1} if opset >= 18 else {"keepdims": 1, "axes": [-1]}
        product = onnx.NodeProto()
        product.CopyFrom(n)
        product.input[0], product.output[0] = p + "/x", p + "/y"
        floor = "per_token.gelu_floor" if after_gelu else "per_token.eps"
        out += ([] if after_gelu else [helper.make_node("Abs", [x], [p + "/abs"], name=p + "/Abs")])
        out += [helper.make_node("ReduceMax", reduce, [p + "/peak0"], name=p + "/TokenPeak", **kw),
                helper.make_node("Max", [p + "/peak0", floor], [p + "/peak"], name=p + "/Floor"),
                helper.make_node("Div", [x, p + "/peak"], [p + "/x"], name=p + "/PerToken"),
                product,
                helper.make_node("Mul", [p + "/y", p + "/peak"], [n.output[0]],
                                 name=p + "/Rescale")]
    del graph.node[:]
    graph.node.extend(out)
    zero_padding(graph)
    save_consolidated(proto, dst, Path(src).resolve().parent)


def zero_padding(graph: onnx.GraphProto) -> bool:
    """Multiply the first normalization's output (the embeddings) by the attention mask, so
    that padding enters the encoder as zeros; False where the graph has no attention_mask."""
    if "attention_mask" not in {i.name for i in graph.input}:
        return False
    first = next((n for n in graph.node if n.op_type in NORMS), None)
    if first is None:
        return False
    emb, zeroed = first.output[0], first.output[0] + "/padding_zeroed"
    if emb in {o.name for o in graph.output}:
        return False  # an output itself: leave it (never the case in an encoder)
    for n in graph.node:
        for i, name in enumerate(n.input):
            if name == emb:
                n.input[i] = zeroed
    at = list(graph.node).index(first) + 1
    graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64),
                                                     "per_token.mask_axes"))
    for k, node in enumerate([
            helper.make_node("Cast", ["attention_mask"], ["per_token.mask"],
                             to=onnx.TensorProto.FLOAT, name="per_token/MaskToFloat"),
            helper.make_node("Unsqueeze", ["per_token.mask", "per_token.mask_axes"],
                             ["per_token.mask3"], name="per_token/MaskPerToken"),
            helper.make_node("Mul", [emb, "per_token.mask3"], [zeroed],
                             name="per_token/ZeroPadding")]):
        graph.node.insert(at + k, node)
    return True
