"""Per-token int8 for the MatMuls whose inputs carry outlier tokens. onnxruntime's dynamic
quantization gives a MatMul's whole input one scale, set by its largest value, so a token
carrying outlier activations (the `<s>` attention sink, `</s>`, punctuation), or a longer
batchmate's, leaves every other token a few int8 levels: a text's answer then depends on
what it is batched with. Here each token (row) gets its own scale: a QuantizeLinear with one
scale per row (ONNX's blocked quantization, one block the row's length) feeds onnxruntime's
MatMulIntegerToFloat (int8 weights, a scale per output column), and the product is
multiplied by the row's scale. Every MatMul stays int8 (docs/int8.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import calibration
from .graph_index import ffn_matmuls, index

# GELU's outputs are never below -0.16997 (x * Phi(x) at x = -0.75; the tanh form alike): a
# token's peak |x| after them is its largest value, which saves a pass of Abs
GELU_OPS, GELU_FLOOR = ("Gelu", "BiasGelu", "FastGelu"), 0.17
NORMS = ("LayerNormalization", "SkipLayerNormalization", "EmbedLayerNormalization")
# uint8 zero points (onnxruntime's fast int8 GEMMs take u8 activations, one zero point per
# tensor): 128 for inputs of either sign, 127 levels each way; after GELU 16, which leaves
# 239 levels to the positive values, and a scale of at least GELU_FLOOR / 16 keeps -0.17
# in range (a symmetric scale there spends half its levels on values that never occur:
# benchmarks/experiments/per_token)
SIGNED_ZERO, GELU_ZERO = 128, 16
OPSET = 21  # QuantizeLinear's blocked form (a scale per row)


def matmuls(proto: onnx.ModelProto, which: str, hidden: int, intermediate: int) -> list[str]:
    """The MatMuls with a constant weight that `which` names ("ffn": the FFN's up- and
    down-projections, by weight shape; "all": every one). A fused Attention mixes tokens
    after its product, so it cannot take the scales back: never chosen."""
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


def int8_columns(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A [K, N] weight as symmetric int8 with one scale per output column."""
    scale = np.maximum(np.abs(w).max(axis=0), 1e-12).astype(np.float32) / 127
    return np.clip(np.round(w / scale), -127, 127).astype(np.int8), scale


def per_token_int8(proto: onnx.ModelProto, nodes: list[str], folder: Path, data: str,
                   gelu_zero: int = GELU_ZERO) -> onnx.ModelProto:
    """`proto` (its weights in `folder`) with each named fp32 MatMul y = x @ W written as
    per-token int8: s = each row's peak over its levels, y = MatMulIntegerToFloat(
    QuantizeLinear(x, s), int8 W) * s; the new int8 weights appended to `folder`/`data`.
    Padding is zeroed where the encoder starts (masked keys change no real token, but their
    values would set the scales of MatMuls left per-tensor), and the graph moves to opset
    OPSET (a new proto where it was lower). Returns the rewritten graph."""
    from onnx import version_converter

    from .external import append_external, read_array

    wanted = set(nodes)
    if not wanted:
        raise ValueError("no MatMul to write per token")
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), OPSET)
    if opset < OPSET:
        proto = version_converter.convert_version(proto, OPSET)
    proto.ir_version = max(proto.ir_version, 10)  # what opset 21 needs
    g = index(proto.graph)
    graph = proto.graph
    consts: list[onnx.TensorProto] = [numpy_helper.from_array(np.array([-1], np.int64),
                                                              "per_token.axes"),
                                      numpy_helper.from_array(np.array(1.0, np.float32),
                                                              "per_token.one")]
    made: set[int] = set()  # zero points whose constants and [batch, seq, 1] tensor exist
    out: list[onnx.NodeProto] = []
    with open(folder / data, "wb") as weights:
        for n in graph.node:
            if n.name not in wanted:
                out.append(n)
                continue
            x, p = n.input[0], n.name
            wq, w_scale = int8_columns(read_array(g.initializers[n.input[1]],
                                                  str(folder)).astype(np.float32))
            q_w = numpy_helper.from_array(wq, p + "/w_int8")
            append_external(weights, q_w, wq.tobytes(), data)
            consts += [q_w, numpy_helper.from_array(w_scale, p + "/w_scale")]
            after_gelu = x in g.producer and g.producer[x].op_type in GELU_OPS
            zero = gelu_zero if after_gelu else SIGNED_ZERO
            z = f"per_token.zero{zero}"  # the constants every MatMul of this zero point reads
            if zero not in made:
                consts += [numpy_helper.from_array(np.array(zero, np.uint8), z),
                           numpy_helper.from_array(np.array([zero], np.uint8), z + ".1d"),
                           numpy_helper.from_array(np.array(1 / (255 - zero), np.float32),
                                                   z + ".per_level")]
                if after_gelu:
                    consts.append(numpy_helper.from_array(
                        np.array(GELU_FLOOR / zero, np.float32), z + ".floor"))
            if after_gelu:
                peak_of = x
            else:
                out.append(helper.make_node("Abs", [x], [p + "/abs"], name=p + "/Abs"))
                peak_of = p + "/abs"
            # a row of zeros takes scale 0: whatever QuantizeLinear makes of 0 / 0, the product
            # times 0 is that row's true product, 0; after GELU the scale is floored so that
            # -GELU_FLOOR stays in range
            scale = p + ("/scale0" if after_gelu else "/scale")
            out += [helper.make_node("ReduceMax", [peak_of, "per_token.axes"], [p + "/peak"],
                                     keepdims=1, name=p + "/TokenPeak"),
                    helper.make_node("Mul", [p + "/peak", z + ".per_level"], [scale],
                                     name=p + "/PerLevel")]
            if after_gelu:
                out.append(helper.make_node("Max", [scale, z + ".floor"], [p + "/scale"],
                                            name=p + "/Floor"))
            if zero not in made:  # the same [batch, seq, 1] shape for every MatMul
                made.add(zero)
                out += [helper.make_node("Shape", [p + "/scale"], [p + "/rows"],
                                         name=p + "/Rows"),
                        helper.make_node("Expand", [z + ".1d", p + "/rows"], [z + ".rows"],
                                         name=f"per_token/Zero{zero}")]
            out += [helper.make_node("QuantizeLinear", [x, p + "/scale", z + ".rows"],
                                     [p + "/x_uint8"], axis=-1, block_size=int(wq.shape[0]),
                                     name=p + "/QuantizePerToken"),
                    helper.make_node("MatMulIntegerToFloat",
                                     [p + "/x_uint8", p + "/w_int8", "per_token.one",
                                      p + "/w_scale", z], [p + "/y"],
                                     name=p + "/MatMulInteger", domain="com.microsoft"),
                    helper.make_node("Mul", [p + "/y", p + "/scale"], [n.output[0]],
                                     name=p + "/Rescale")]
    used = {i for node in out for i in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.node[:]
    graph.node.extend(out)
    del graph.initializer[:]
    graph.initializer.extend(kept + consts)
    zero_padding(graph)
    if not any(o.domain == "com.microsoft" for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return proto


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
