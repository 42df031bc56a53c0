"""One index of an ONNX graph for the rewrites that match patterns in it (the tied table, the
int8 and 4-bit heads, smoothing): initializers by name, each tensor's producer and readers,
and the rank of each graph input; and the FFN MatMuls, which several recipes name."""
from __future__ import annotations

import dataclasses

import onnx


@dataclasses.dataclass(frozen=True)
class GraphIndex:
    initializers: dict[str, onnx.TensorProto]
    producer: dict[str, onnx.NodeProto]  # tensor -> the node that writes it
    readers: dict[str, list[onnx.NodeProto]]  # tensor -> the nodes that read it, in graph order
    input_ranks: dict[str, int]  # graph input -> its rank

    def reads(self, tensor: str) -> int:
        return len(self.readers.get(tensor, ()))


def index(graph: onnx.GraphProto) -> GraphIndex:
    """The index of `graph` as it is now (build a new one after a rewrite)."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    return GraphIndex(initializers={i.name: i for i in graph.initializer},
                      producer={o: n for n in graph.node for o in n.output},
                      readers=readers,
                      input_ranks={i.name: len(i.type.tensor_type.shape.dim)
                                   for i in graph.input})


def ffn_matmuls(proto: onnx.ModelProto, hidden: int, intermediate: int) -> list[str]:
    """Names of the FFN MatMuls (up- and down-projections), found by weight shape."""
    shapes = {i.name: tuple(i.dims) for i in proto.graph.initializer}
    wanted = {(intermediate, hidden), (hidden, intermediate)}
    return [n.name for n in proto.graph.node
            if n.op_type == "MatMul" and len(n.input) > 1 and shapes.get(n.input[1]) in wanted]
