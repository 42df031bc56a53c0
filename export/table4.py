"""The word-embedding table in 4-bit blocks (`xlmr export --table-bits 4`), stored once and
read by both its readers: onnxruntime's GatherBlockQuantized for the embedding and, where the
LM head is tied to it, MatMulNBits for the head. Both ops take the same bytes: [vocab,
hidden/block, block/2] (two symmetric 4-bit values a byte, low nibble first, zero point 8)
and one fp32 scale per block, [vocab, hidden/block].

Why: the table is 69% of xlm-roberta-base's weights, and it stays the largest tensor of a
bundle trimmed to 60k pieces (46 MB of 133 at 8 bits). quantize_dynamic quantizes a Gather's
table to 8 bits only and MatMulNBitsQuantizer leaves Gathers alone, hence this rewrite of the
int8 graph quantize_dynamic wrote (export/quantize.py calls it). Measured on the
base-shaped fill-mask, trimmed to 60k pieces / untrimmed (results/avx2-epyc/table-bits): on
disk 135 -> 118 MB / 289 -> 217 MB, cold-start peak RSS 304 -> 283 / 816 -> 725 MB, b1 p50
11.7 -> 10.9 / 18.4 -> 15.6 ms; the accuracy gate judges it like any recipe (opt-in: 4-bit
blocks are coarser than the 8-bit table)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

BLOCKS = (32, 16)  # the first that divides hidden (GatherBlockQuantized: a power of 2, >= 16)
ROWS = 1 << 14  # table rows quantized at a time (XL: 16k x 2560 fp32 = 168 MB)


def block_for(hidden: int) -> int | None:
    """The block size for a table `hidden` wide, or None when none divides it."""
    return next((b for b in BLOCKS if hidden % b == 0), None)


def four_bit_blocks(table: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """[rows, hidden] fp32 -> (uint8 [rows, hidden/block, block/2], fp32 scales [rows,
    hidden/block]): per block, scale = max|w| / 7 and q = round(w / scale) + 8 in [1, 15]
    (symmetric, MatMulNBits' default zero point 8), two values a byte, low nibble first."""
    rows, hidden = table.shape
    packed = np.empty((rows, hidden // block, block // 2), np.uint8)
    scales = np.empty((rows, hidden // block), np.float32)
    for r in range(0, rows, ROWS):
        blocks = np.asarray(table[r:r + ROWS], np.float32).reshape(-1, hidden // block, block)
        s = np.abs(blocks).max(-1) / 7.0
        s[s == 0] = 1.0
        q = (np.clip(np.rint(blocks / s[..., None]), -7, 7) + 8).astype(np.uint8)
        packed[r:r + ROWS] = q[..., 0::2] | (q[..., 1::2] << 4)
        scales[r:r + ROWS] = s
    return packed, scales


def dequantized(packed: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """What both onnxruntime ops read from `four_bit_blocks`' output: [rows, hidden] fp32."""
    q = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(*packed.shape[:2], -1)
    return ((q.astype(np.float32) - 8) * scales[..., None]).reshape(packed.shape[0], -1)


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _only(nodes: list[onnx.NodeProto], op: str) -> onnx.NodeProto | None:
    return nodes[0] if len(nodes) == 1 and nodes[0].op_type == op else None


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 0)


def table_to_4bit(proto: onnx.ModelProto, fp32: Callable[[str], np.ndarray]) -> str | None:
    """Rewrite the int8 graph's word-embedding table (a quantized Gather table, and the tied
    head's MatMulInteger on it when there is one) to 4-bit blocks; `fp32(name)` gives the
    table's fp32 values by its fp32 name. Returns the table's name, or None (graph left as it
    was) where the patterns quantize_dynamic writes are not all there."""
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    ranks = {i.name: len(i.type.tensor_type.shape.dim) for i in graph.input}
    producer = {o: n for n in graph.node for o in n.output}
    readers = _consumers(graph)
    for name, table in inits.items():
        if len(table.dims) != 2 or not name.endswith("_quantized") or name not in readers:
            continue
        users = readers[name]
        gathers, heads = [], []
        for u in users:
            dq = _only(readers.get(u.output[0], []), "DequantizeLinear")
            if u.op_type == "Gather" and u.input[0] == name and dq is not None \
                    and ranks.get(u.input[1]) == 2 and _axis(u) in (0, 1):
                last = _only(readers.get(dq.output[0], []), "Transpose") if _axis(u) else dq
                if last is not None:  # axis 1: the tied table stored [hidden, vocab]
                    gathers.append((u, dq, last))
            elif u.op_type == "MatMulInteger" and u.input[1] == name:
                dql = producer.get(u.input[0])
                cast = _only(readers.get(u.output[0], []), "Cast")
                mul = cast and _only(readers.get(cast.output[0], []), "Mul")
                if dql is not None and dql.op_type == "DynamicQuantizeLinear" and mul:
                    heads.append((dql.input[0], u, cast, mul))
        if not gathers or len(gathers) + len(heads) != len(users) or \
                len({_axis(g) for g, _, _ in gathers}) != 1:
            continue
        transposed = _axis(gathers[0][0]) == 1
        vocab, hidden = table.dims[::-1] if transposed else table.dims
        block = block_for(hidden)
        if block is None or (heads and not transposed):
            continue
        values = fp32(name[:-len("_quantized")])
        packed, scales = four_bit_blocks(values.T if transposed else values, block)
        del values
        _rewrite(graph, name, gathers, heads, packed, scales, hidden, vocab, block)
        if not any(o.domain == "com.microsoft" for o in proto.opset_import):
            proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
        return name
    return None


def _rewrite(graph: onnx.GraphProto, name: str, gathers: list, heads: list,
             packed: np.ndarray, scales: np.ndarray, hidden: int, vocab: int,
             block: int) -> None:
    base = name[:-len("_quantized")]
    t4, s4, s4_rows = f"{base}_4bit", f"{base}_4bit_scales", f"{base}_4bit_scales_rows"
    nodes = list(graph.node)
    for k, (g, dq, last) in enumerate(gathers):
        at = nodes.index(g)
        for n in {id(x): x for x in (g, dq, last)}.values():
            nodes.remove(n)
        blocks = f"{g.output[0]}_4bit_blocks"
        nodes[at:at] = [
            helper.make_node("Unsqueeze", [s4, f"{base}_4bit_axis2"], [f"{s4_rows}{k}"]),
            helper.make_node("GatherBlockQuantized", [t4, g.input[1], f"{s4_rows}{k}"], [blocks],
                             domain="com.microsoft", gather_axis=0, quantize_axis=2,
                             block_size=block, bits=4, name=f"{g.name or 'embedding'}_4bit"),
            helper.make_node("Reshape", [blocks, f"{base}_4bit_rows"], [last.output[0]]),
        ]
    for x, mm, cast, mul in heads:
        at = nodes.index(mm)
        for n in (mm, cast, mul):
            nodes.remove(n)
        nodes.insert(at, helper.make_node(
            "MatMulNBits", [x, t4, s4], [mul.output[0]], domain="com.microsoft", K=hidden,
            N=vocab, bits=4, block_size=block, accuracy_level=4,  # int8 compute, as int8's
            name=mm.name or "lm_head_4bit"))
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend([
        numpy_helper.from_array(packed, t4), numpy_helper.from_array(scales, s4),
        numpy_helper.from_array(np.array([2], np.int64), f"{base}_4bit_axis2"),
        numpy_helper.from_array(np.array([0, 0, hidden], np.int64), f"{base}_4bit_rows")])
    _drop_unused(graph)


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Nodes whose outputs nothing reads (the head's activation quantizer) and initializers no
    node reads (the 8-bit table, its scale and zero point), removed."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    read = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
