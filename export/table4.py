"""The word-embedding table in 4-bit blocks (`xlmr export --table-bits 4`), stored once and
read by both its readers: onnxruntime's GatherBlockQuantized for the embedding and, where the
LM head is tied to it, MatMulNBits for the head. Both ops take the same bytes: [vocab,
hidden/block, block/2] (two symmetric 4-bit values a byte, low nibble first, zero point 8)
and one fp32 scale per block, [vocab, hidden/block].

Why: the table is most of xlm-roberta-base's weights, and it stays the largest tensor of a
trimmed bundle. quantize_dynamic quantizes a Gather's
table to 8 bits only and MatMulNBitsQuantizer leaves Gathers alone, hence this rewrite: of
the int8 graph quantize_dynamic wrote, or of the fp32 graph before MatMulNBitsQuantizer for
an int4 file (export/quantize.py calls it; without it an int4 file holds the table twice, 4
bits for the head and 8 for the Gather). The accuracy gate judges it like any recipe (opt-in:
4-bit blocks are coarser than the 8-bit table). Figures: docs/design/table-4bit.md."""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph_index import index

BLOCKS = (32, 16)  # the first that divides hidden (GatherBlockQuantized: a power of 2, >= 16)
QUANTIZED = "_quantized"  # quantize_dynamic's suffix for the 8-bit copy of a weight
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


def _only(nodes: list[onnx.NodeProto], op: str) -> onnx.NodeProto | None:
    return nodes[0] if len(nodes) == 1 and nodes[0].op_type == op else None


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 0)


def _gather_path(u: onnx.NodeProto, name: str, readers: dict[str, list[onnx.NodeProto]],
                 ranks: dict[str, int]) -> list[onnx.NodeProto] | None:
    """The nodes from a Gather on the table to the embedding [batch, sequence, hidden]:
    Gather [-> DequantizeLinear] [-> Transpose when axis 1, the table stored transposed]."""
    if u.op_type != "Gather" or u.input[0] != name or ranks.get(u.input[1]) != 2 \
            or _axis(u) not in (0, 1):
        return None
    path = [u]
    if name.endswith(QUANTIZED):
        dq = _only(readers.get(u.output[0], []), "DequantizeLinear")
        if dq is None:
            return None
        path.append(dq)
    if _axis(u) == 1:
        tr = _only(readers.get(path[-1].output[0], []), "Transpose")
        perm = tr and next((list(a.ints) for a in tr.attribute if a.name == "perm"), None)
        if tr is None or perm != [1, 2, 0]:  # [hidden, batch, sequence] -> rows
            return None
        path.append(tr)
    return path


def _head_path(u: onnx.NodeProto, name: str, producer: dict[str, onnx.NodeProto],
               readers: dict[str, list[onnx.NodeProto]]) -> tuple[str, list] | None:
    """(the head's fp32 input, its nodes) for `x @ table`: MatMul in the fp32 graph, or
    quantize_dynamic's MatMulInteger -> Cast -> Mul on the int8 table."""
    if u.op_type == "MatMul" and u.input[1] == name:
        return u.input[0], [u]
    if u.op_type != "MatMulInteger" or u.input[1] != name:
        return None
    dql = producer.get(u.input[0])
    cast = _only(readers.get(u.output[0], []), "Cast")
    mul = cast and _only(readers.get(cast.output[0], []), "Mul")
    if dql is None or dql.op_type != "DynamicQuantizeLinear" or not mul:
        return None
    return dql.input[0], [u, cast, mul]


def table_to_4bit(proto: onnx.ModelProto, fp32: Callable[[str], np.ndarray],
                  accuracy_level: int | None = 4) -> str | None:
    """Rewrite the word-embedding table (what a Gather on input ids reads, and the tied head
    `x @ T` on it when there is one) to 4-bit blocks, in the fp32 graph (the int4 writer,
    before MatMulNBitsQuantizer) or in the int8 graph quantize_dynamic wrote; `fp32(name)`
    gives the table's fp32 values by its fp32 name. The head's MatMulNBits computes at
    `accuracy_level` (4: int8 activations, None: fp32). Returns the table's name, or None
    (graph left as it was) where the patterns are not all there."""
    graph = proto.graph
    g = index(graph)
    inits, ranks, producer, readers = g.initializers, g.input_ranks, g.producer, g.readers
    for name, table in inits.items():
        if len(table.dims) != 2 or name not in readers:
            continue
        users = readers[name]
        gathers = [p for p in (_gather_path(u, name, readers, ranks) for u in users) if p]
        heads = [h for h in (_head_path(u, name, producer, readers) for u in users) if h]
        if not gathers or len(gathers) + len(heads) != len(users) or \
                len({_axis(g[0]) for g in gathers}) != 1:
            continue
        transposed = _axis(gathers[0][0]) == 1
        vocab, hidden = table.dims[::-1] if transposed else table.dims
        block = block_for(hidden)
        if block is None or (heads and not transposed):
            continue
        base = name[:-len(QUANTIZED)] if name.endswith(QUANTIZED) else name
        values = fp32(base)
        packed, scales = four_bit_blocks(values.T if transposed else values, block)
        del values
        _rewrite(graph, base, gathers, heads, packed, scales, (hidden, vocab, block),
                 accuracy_level)
        _prune(proto)
        if not any(o.domain == "com.microsoft" for o in proto.opset_import):
            proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
        return name
    return None


def _rewrite(graph: onnx.GraphProto, base: str, gathers: list, heads: list,
             packed: np.ndarray, scales: np.ndarray, sizes: tuple[int, int, int],
             accuracy_level: int | None) -> None:
    hidden, vocab, block = sizes
    t4, s4, s4_rows = f"{base}_4bit", f"{base}_4bit_scales", f"{base}_4bit_scales_rows"
    nodes = list(graph.node)
    for k, path in enumerate(gathers):
        g, last = path[0], path[-1]
        at = nodes.index(g)
        for n in path:
            nodes.remove(n)
        blocks = f"{g.output[0]}_4bit_blocks"
        rows = [helper.make_node("Unsqueeze", [s4, f"{base}_4bit_axis2"], [s4_rows])] \
            if k == 0 else []  # the Gather's scales [vocab, blocks, 1], made once
        nodes[at:at] = [
            *rows,
            helper.make_node("GatherBlockQuantized", [t4, g.input[1], s4_rows], [blocks],
                             domain="com.microsoft", gather_axis=0, quantize_axis=2,
                             block_size=block, bits=4, name=f"{g.name or 'embedding'}_4bit"),
            helper.make_node("Reshape", [blocks, f"{base}_4bit_rows"], [last.output[0]]),
        ]
    for x, path in heads:
        at = nodes.index(path[0])
        for n in path:
            nodes.remove(n)
        level = {} if accuracy_level is None else {"accuracy_level": accuracy_level}
        nodes.insert(at, helper.make_node(
            "MatMulNBits", [x, t4, s4], [path[-1].output[0]], domain="com.microsoft",
            K=hidden, N=vocab, bits=4, block_size=block, name=path[0].name or "lm_head_4bit",
            **level))
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend([
        numpy_helper.from_array(packed, t4), numpy_helper.from_array(scales, s4),
        numpy_helper.from_array(np.array([2], np.int64), f"{base}_4bit_axis2"),
        numpy_helper.from_array(np.array([0, 0, hidden], np.int64), f"{base}_4bit_rows")])


def _prune(proto: onnx.ModelProto) -> None:
    """What the rewrite left unread (the head's activation quantizer, the 8-bit table, its
    scale and zero point) removed, by onnxruntime's own graph pruning; inputs kept."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    OnnxModel(proto).prune_graph(allow_remove_graph_inputs=False)
