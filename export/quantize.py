"""Precisions other than fp32, all through onnxruntime's own tools: dynamic int8 (with named
recipes for the accuracy gate), fp16 for CUDA, weight-only int4 (MatMulNBits)."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
from onnx import numpy_helper


@dataclasses.dataclass(frozen=True)
class Int8Recipe:
    """One dynamic-quantization setting; tried in order until the accuracy gate passes."""

    name: str
    per_channel: bool = False
    reduce_range: bool = False
    fp32_ffn: str = ""  # "", "out" (down-projections) or "all" (both FFN MatMuls) kept fp32
    int8_head: bool = True  # tied LM head as an int8 GEMM (int8_tied_head); the last, most
    # conservative recipe keeps quantize_dynamic's dequantized table instead


# The known remedies, in order of cost (onnxruntime #9599: int8 MiniLM near random). On CPUs
# without VNNI the u8s8 kernels can saturate, which reduce_range (7-bit weights) avoids.
INT8_RECIPES = (
    Int8Recipe("default"),
    Int8Recipe("per_channel", per_channel=True),
    Int8Recipe("per_channel+reduce_range", per_channel=True, reduce_range=True),
    Int8Recipe("per_channel+reduce_range+fp32_ffn_out", True, True, "out"),
    Int8Recipe("per_channel+reduce_range+fp32_ffn", True, True, "all", int8_head=False),
)


def ffn_matmuls(proto: onnx.ModelProto, hidden: int, intermediate: int, which: str) -> list[str]:
    """Names of the FFN MatMuls, found by weight shape: the down-projections ([intermediate,
    hidden]) read the outlier activations that make int8 collapse; "all" adds the up-projections."""
    shapes = {i.name: tuple(i.dims) for i in proto.graph.initializer}
    wanted = {(intermediate, hidden)} | ({(hidden, intermediate)} if which == "all" else set())
    return [n.name for n in proto.graph.node
            if n.op_type == "MatMul" and len(n.input) > 1 and shapes.get(n.input[1]) in wanted]


def _fresh(dst: Path) -> Path:
    """Remove an earlier attempt's file and weights: onnx *appends* to an existing .data."""
    Path(dst).unlink(missing_ok=True)
    Path(dst).with_name(Path(dst).name + ".data").unlink(missing_ok=True)
    return dst


# What quantize_dynamic logs on every call for graphs like ours, and why it is noise here:
# pre-processing (symbolic shape inference + optimisation) is what our fusions already did,
# and the fused com.microsoft ops' types come from DefaultTensorType.
QUANTIZER_NOISE = ("Please consider to run pre-processing before quantization",
                   "Failed to infer data type of tensor")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(QUANTIZER_NOISE)


@contextlib.contextmanager
def quiet_quantizer() -> Iterator[None]:
    """onnxruntime's quantizer logs through the root logger: drop its known noise, once per
    recipe otherwise, while it runs (anything else still gets through)."""
    noise = _DropNoise()
    root = logging.getLogger()
    handlers = list(root.handlers)
    root.addFilter(noise)
    for h in handlers:
        h.addFilter(noise)
    try:
        yield
    finally:
        root.removeFilter(noise)
        for h in handlers:
            h.removeFilter(noise)


def quantize_int8(src: Path, dst: Path, recipe: Int8Recipe, external_data: bool,
                  hidden: int, intermediate: int) -> tuple[list[str], bool]:
    """Dynamic int8 of MatMul/Attention/Gather (the word-embedding table included); returns
    the MatMuls the recipe kept in fp32 and whether a tied LM head became an int8 GEMM."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exclude = ffn_matmuls(onnx.load(str(src), load_external_data=False), hidden, intermediate,
                          recipe.fp32_ffn) if recipe.fp32_ffn else []
    with quiet_quantizer():
        quantize_dynamic(
            str(src), str(_fresh(dst)), weight_type=QuantType.QInt8,
            per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
            nodes_to_exclude=exclude,
            op_types_to_quantize=["MatMul", "Attention", "Gather", "EmbedLayerNormalization"],
            use_external_data_format=external_data,
            # the fused com.microsoft ops have no type inference: without this it fails
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    proto = onnx.load(str(dst))
    head = recipe.int8_head and int8_tied_head(proto)
    if head:
        from .onnx_export import save_onnx

        save_onnx(proto, dst, external_data)
    return exclude, head


@dataclasses.dataclass
class TiedHead:
    """A DequantizeLinear of a per-tensor 8-bit 2-D table whose every consumer is a MatMul
    taking it as the left operand: the tied LM head (W @ h^T) after quantize_dynamic."""

    dequantize: onnx.NodeProto
    table: onnx.TensorProto
    scale: onnx.TensorProto
    zero: onnx.TensorProto | None
    matmuls: list[onnx.NodeProto]


def find_tied_heads(proto: onnx.ModelProto) -> list[TiedHead]:
    from onnx import TensorProto

    inits = {i.name: i for i in proto.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    found = []
    for dq in (n for n in proto.graph.node if n.op_type == "DequantizeLinear"):
        users = consumers.get(dq.output[0], [])
        w, scale, zero = (inits.get(x) for x in (list(dq.input) + [""] * 3)[:3])
        if (w is None or w.data_type not in (TensorProto.INT8, TensorProto.UINT8)
                or len(w.dims) != 2 or scale is None
                or len(scale.dims) or (zero is not None and len(zero.dims))
                or not users or any(u.op_type != "MatMul" or u.input[0] != dq.output[0]
                                    for u in users)):
            continue
        found.append(TiedHead(dq, w, scale, zero, users))
    return found


def int8_head_nodes(p: str, head: TiedHead, x: str,
                    outputs: list[str]) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """W (int8, as stored) @ q(x), x quantized per column to 7 bits, rescaled to fp32."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Abs", [x], [f"{p}_abs"]),
        # one scale per column of h^T, i.e. per <mask> row (or position)
        helper.make_node("ReduceMax", [f"{p}_abs"], [f"{p}_max"], axes=[-2], keepdims=1),
        helper.make_node("Div", [f"{p}_max", f"{p}_63"], [f"{p}_s0"]),
        helper.make_node("Max", [f"{p}_s0", f"{p}_eps"], [f"{p}_scale"]),
        helper.make_node("Div", [x, f"{p}_scale"], [f"{p}_div"]),
        helper.make_node("Round", [f"{p}_div"], [f"{p}_round"]),
        helper.make_node("Cast", [f"{p}_round"], [f"{p}_q"], to=TensorProto.INT8),
        helper.make_node("MatMulInteger", [head.table.name, f"{p}_q",
                                           head.zero.name if head.zero is not None else "",
                                           f"{p}_zero"], [f"{p}_i32"]),
        helper.make_node("Cast", [f"{p}_i32"], [f"{p}_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [head.scale.name, f"{p}_scale"], [f"{p}_ws"]),
        helper.make_node("Mul", [f"{p}_f", f"{p}_ws"], outputs),
    ]
    inits = [numpy_helper.from_array(np.array(63, np.float32), f"{p}_63"),
             numpy_helper.from_array(np.array(1e-12, np.float32), f"{p}_eps"),
             numpy_helper.from_array(np.array(0, np.int8), f"{p}_zero")]
    return nodes, inits


def int8_tied_head(proto: onnx.ModelProto) -> bool:
    """Run the tied LM head (W @ h^T, W the int8 embedding table) as an int8 GEMM.

    quantize_dynamic leaves it as DequantizeLinear(W) -> MatMul, which writes the whole table
    out in fp32 on every run (250k x 768: 768 MB, 120 ms for one mask where fp32 takes 38).
    Here h^T is quantized per run, one scale per row of h, symmetric (onnxruntime's 8-bit-A
    GEMMs want an int8 B) and to 7 bits: without VNNI the u8*s8 kernels add pairs in int16,
    and 255*127*2 saturates where 255*63*2 does not (the reason for reduce_range). MatMulInteger
    then reads W as it is stored: no fp32 copy. The accuracy gate judges the result as for any
    recipe. True if rewritten."""
    heads = find_tied_heads(proto)
    for head in heads:
        for k, mm in enumerate(head.matmuls):
            nodes, inits = int8_head_nodes(f"{mm.name or head.dequantize.name}_int8head{k}",
                                           head, mm.input[1], list(mm.output))
            proto.graph.initializer.extend(inits)
            at = list(proto.graph.node).index(mm)
            proto.graph.node.remove(mm)
            for j, node in enumerate(nodes):
                proto.graph.node.insert(at + j, node)
        proto.graph.node.remove(head.dequantize)
    return bool(heads)


def convert_fp16(src: Path, dst: Path, external_data: bool) -> None:
    """fp16 weights and compute, fp32 inputs/outputs (for the CUDA provider)."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(src)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(_fresh(dst)), use_external_data_format=external_data)


def quantize_int4(src: Path, dst: Path, external_data: bool, block_size: int = 32) -> None:
    """Weight-only 4-bit MatMulNBits (for XL); activations stay fp32."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quant = MatMulNBitsQuantizer(onnx.load(str(src)), block_size=block_size, is_symmetric=True)
    quant.process()
    quant.model.save_model_to_file(str(_fresh(dst)), use_external_data_format=external_data)


def largest_initializer(path: Path) -> tuple[str, tuple[int, ...], str]:
    """(name, shape, dtype) of the biggest weight: tests use it to see the embedding is int8."""
    proto = onnx.load(str(path))
    best = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    return best.name, tuple(best.dims), str(numpy_helper.to_array(best).dtype)
