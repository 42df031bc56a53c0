"""The tied embedding / LM-head table stored once, transposed ([hidden, vocab]), so that the
head is `x @ T`: activations on the left, a constant weight on the right. That is the product
every ISA's int8 kernels optimise (u8 activations x prepacked s8 weights, what quantize_dynamic
writes for any MatMul); the embedding reads the same table with a Gather along axis 1.

The table-left int8 product this replaces is several times slower (docs/design/tied-head.md).
quantize_dynamic cannot do this rewrite (it quantizes the graph it is given), hence this module.
"""
from __future__ import annotations

from typing import Callable

import onnx
from onnx import helper, numpy_helper

from .graph_index import index


def _swaps_last_two(node: onnx.NodeProto) -> bool:
    perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
    return perm is not None and len(perm) >= 2 and \
        perm == list(range(len(perm) - 2)) + [len(perm) - 1, len(perm) - 2]


def transpose_in_memory(table: onnx.TensorProto) -> None:
    table.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(table).T.copy(), table.name))


def transpose_tied_table(proto: onnx.ModelProto,
                         transpose: Callable[[onnx.TensorProto], None] = transpose_in_memory,
                         ) -> bool:
    """Rewrite `Gather(W, ids)` + `Transpose(MatMul(W, Transpose(x)))` (the tied head as
    export writes it, W [vocab, hidden]) into `Transpose(Gather(T, ids, axis=1))` +
    `MatMul(x, T)`, T = W^T stored once in W's place (`transpose` turns W into T: in memory,
    or in the plan of a weightless export). True if rewritten; the graph is left as it was
    when the pattern is not all there."""
    graph = proto.graph
    g = index(graph)
    inits, ranks, producer, consumers = g.initializers, g.input_ranks, g.producer, g.readers
    for name, table in inits.items():
        users = consumers.get(name, [])
        if len(table.dims) != 2 or not users:
            continue
        gathers = [u for u in users if u.op_type == "Gather" and u.input[0] == name and
                   all(a.i == 0 for a in u.attribute if a.name == "axis") and
                   ranks.get(u.input[1]) == 2]  # the ids [batch, sequence] themselves
        heads = []
        for mm in (u for u in users if u.op_type == "MatMul" and u.input[0] == name):
            inner, outer = producer.get(mm.input[1]), consumers.get(mm.output[0], [])
            if inner is None or inner.op_type != "Transpose" or not _swaps_last_two(inner) \
                    or len(consumers[inner.output[0]]) != 1 or len(outer) != 1 \
                    or outer[0].op_type != "Transpose" or not _swaps_last_two(outer[0]):
                break
            heads.append((inner, mm, outer[0]))
        if not gathers or not heads or len(gathers) + len(heads) != len(users):
            continue
        transpose(table)
        _rewrite(graph, table, gathers, heads)
        return True
    return False


def _rewrite(graph: onnx.GraphProto, table: onnx.TensorProto, gathers: list[onnx.NodeProto],
             heads: list[tuple[onnx.NodeProto, onnx.NodeProto, onnx.NodeProto]]) -> None:
    nodes = list(graph.node)
    for g in gathers:  # [hidden, *ids] -> [*ids, hidden]
        at = nodes.index(g)
        gathered = g.output[0] + "_by_column"
        out = g.output[0]
        rank = 3  # [hidden, batch, sequence]
        new = [helper.make_node("Gather", [table.name, g.input[1]], [gathered], axis=1,
                                name=(g.name or "embedding") + "_columns"),
               helper.make_node("Transpose", [gathered], [out], perm=[*range(1, rank), 0],
                                name=(g.name or "embedding") + "_rows")]
        nodes[at:at + 1] = new
    for inner, mm, outer in heads:  # (W @ x^T)^T -> x @ T
        for n in (inner, outer):
            nodes.remove(n)
        nodes[nodes.index(mm)] = helper.make_node("MatMul", [inner.input[0], table.name],
                                                  [outer.output[0]], name=mm.name or "lm_head")
    del graph.node[:]
    graph.node.extend(nodes)
