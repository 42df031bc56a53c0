"""Precisions other than fp32, all through onnxruntime's own tools: dynamic int8 (with named
recipes for the accuracy gate), fp16 for CUDA, weight-only int4 (MatMulNBits)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

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


# The known remedies, in order of cost (onnxruntime #9599: int8 MiniLM near random). On CPUs
# without VNNI the u8s8 kernels can saturate, which reduce_range (7-bit weights) avoids.
INT8_RECIPES = (
    Int8Recipe("default"),
    Int8Recipe("per_channel", per_channel=True),
    Int8Recipe("per_channel+reduce_range", per_channel=True, reduce_range=True),
    Int8Recipe("per_channel+reduce_range+fp32_ffn_out", True, True, "out"),
    Int8Recipe("per_channel+reduce_range+fp32_ffn", True, True, "all"),
)


def ffn_matmuls(proto: onnx.ModelProto, hidden: int, intermediate: int, which: str) -> list[str]:
    """Names of the FFN MatMuls, found by weight shape: the down-projections ([intermediate,
    hidden]) read the outlier activations that make int8 collapse; "all" adds the up-projections."""
    shapes = {i.name: tuple(i.dims) for i in proto.graph.initializer}
    wanted = {(intermediate, hidden)} | ({(hidden, intermediate)} if which == "all" else set())
    return [n.name for n in proto.graph.node
            if n.op_type == "MatMul" and len(n.input) > 1 and shapes.get(n.input[1]) in wanted]


def quantize_int8(src: Path, dst: Path, recipe: Int8Recipe, external_data: bool,
                  hidden: int, intermediate: int) -> list[str]:
    """Dynamic int8 of MatMul/Attention/Gather (the word-embedding table included); returns
    the MatMuls the recipe kept in fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exclude = ffn_matmuls(onnx.load(str(src), load_external_data=False), hidden, intermediate,
                          recipe.fp32_ffn) if recipe.fp32_ffn else []
    quantize_dynamic(
        str(src), str(dst), weight_type=QuantType.QInt8, per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range, nodes_to_exclude=exclude,
        op_types_to_quantize=["MatMul", "Attention", "Gather", "EmbedLayerNormalization"],
        use_external_data_format=external_data,
        # the fused com.microsoft ops have no type inference: without this the quantizer fails
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return exclude


def convert_fp16(src: Path, dst: Path, external_data: bool) -> None:
    """fp16 weights and compute, fp32 inputs/outputs (for the CUDA provider)."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(src)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(dst), use_external_data_format=external_data)


def quantize_int4(src: Path, dst: Path, external_data: bool, block_size: int = 32) -> None:
    """Weight-only 4-bit MatMulNBits (for XL); activations stay fp32."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quant = MatMulNBitsQuantizer(onnx.load(str(src)), block_size=block_size, is_symmetric=True)
    quant.process()
    quant.model.save_model_to_file(str(dst), use_external_data_format=external_data)


def largest_initializer(path: Path) -> tuple[str, tuple[int, ...], str]:
    """(name, shape, dtype) of the biggest weight: tests use it to see the embedding is int8."""
    proto = onnx.load(str(path))
    best = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    return best.name, tuple(best.dims), str(numpy_helper.to_array(best).dtype)
