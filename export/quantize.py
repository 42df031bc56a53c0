"""Precisions other than fp32, all through onnxruntime's own tools: dynamic int8 (with named
recipes for the accuracy gate), fp16 for CUDA, weight-only int4 (MatMulNBits)."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from . import per_token, table4
from .graph_index import ffn_matmuls, index


@dataclasses.dataclass(frozen=True)
class Int8Recipe:
    """One dynamic-quantization setting for the accuracy gate (export/gate.py)."""

    name: str
    per_channel: bool = False
    reduce_range: bool = False
    smooth: str = ""  # "norm" or "all": the input is the graph export/smoothing.py smoothed
    per_token: str = ""  # "ffn" or "all": those MatMuls int8 with one activation scale per
    # token (export/per_token.py), so that one token's outliers set no other token's scale
    fp32_ffn: bool = False  # every FFN MatMul kept fp32
    fp32_nodes: tuple[str, ...] = ()  # nodes kept fp32 (the sensitivity pass's choice)
    int8_head: bool = True  # a tied LM head as an int8 GEMM (int8_head) unless kept fp32
    # the word-embedding table kept fp32: where its int8 error is what fails (a model whose
    # embedding outliers its first LayerNorm amplifies), no MatMul kept fp32 can help
    fp32_table: bool = False
    # how the MatMuls set apart from dynamic int8 (fp32_ffn, fp32_nodes) are written: "fp32",
    # or "nbits8": MatMulNBits 8-bit, whose int8 activations are scaled per block of K, so an
    # outlier channel costs only its block (benchmarks/experiments/nbits8)
    apart_as: str = "fp32"


# Every node int8, tried in this order (onnxruntime #9599: int8 MiniLM near random). On CPUs
# without VNNI the u8s8 kernels can saturate, which reduce_range (7-bit weights) avoids;
# smoothing flattens the outlier channels of the inputs (export/smoothing.py); per-token
# scales flatten the outlier tokens (export/per_token.py).
INT8_RECIPES = (
    Int8Recipe("default"),
    Int8Recipe("per_channel", per_channel=True),
    Int8Recipe("per_channel+reduce_range", per_channel=True, reduce_range=True),
    Int8Recipe("smooth+per_channel", per_channel=True, smooth="norm"),
    Int8Recipe("smooth_all+per_channel", per_channel=True, smooth="all"),
    Int8Recipe("smooth+per_channel+per_token_ffn", per_channel=True, smooth="norm",
               per_token="ffn"),
    Int8Recipe("smooth+per_channel+per_token", per_channel=True, smooth="norm",
               per_token="all"),
)
# The last resorts, and the yardsticks the mixed-precision recipe is timed against: the FFN
# in 8-bit MatMulNBits (per-block activation scales), then in fp32.
NBITS8_FFN = Int8Recipe("per_channel+nbits8_ffn", per_channel=True, fp32_ffn=True,
                        apart_as="nbits8")
FP32_FFN = Int8Recipe("per_channel+reduce_range+fp32_ffn", True, True, fp32_ffn=True,
                      int8_head=False)
NBITS8 = {"bits": 8, "block_size": 32, "is_symmetric": True, "accuracy_level": 4}


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


TABLES = ["Gather", "EmbedLayerNormalization"]  # the word-embedding table's readers


def quantize_int8(src: Path, dst: Path, recipe: Int8Recipe, external_data: bool,
                  hidden: int, intermediate: int, table_bits: int = 8,
                  tables: bool = True) -> tuple[list[str], bool, int]:
    """Dynamic int8 of MatMul/Attention/Gather (the word-embedding table included, unless
    not `tables`: the sensitivity pass's probes, where the table's error is common); returns
    the MatMuls the recipe set apart (kept fp32, or written as `apart_as` says), whether a
    tied LM head runs as a u8 x s8 GEMM on the one int8 table the embedding reads too, and
    the bits the table was stored in (4 when asked and export/table4.py could rewrite it:
    the head then runs as MatMulNBits on it).
    The fp32 weights are read one at a time from `src`'s folder (export/external.py), the
    result written there, then consolidated."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .external import load_graph, save_consolidated, weights_from, weights_on_disk

    folder = Path(src).resolve().parent
    graph = load_graph(src)
    tables = tables and not recipe.fp32_table
    exclude = ffn_matmuls(graph, hidden, intermediate) if recipe.fp32_ffn else []
    exclude += [n for n in recipe.fp32_nodes if n not in exclude]
    heads = tied_head_matmuls(graph)
    if not recipe.int8_head:  # the head in fp32 (the embedding Gather stays int8)
        exclude += [n for n in heads if n not in exclude]
    if recipe.apart_as == "nbits8" and exclude:
        graph = nbits8(graph, [n for n in exclude if n not in heads], folder, Path(dst).name)
    rows = [n for n in per_token.matmuls(graph, recipe.per_token, hidden, intermediate)
            if n not in exclude and n not in heads] if recipe.per_token else []
    staged = _fresh(folder / f"{Path(dst).name}.staged.onnx")
    with quiet_quantizer(), weights_on_disk(folder), weights_stay_on_disk():
        quantize_dynamic(
            graph, str(staged), weight_type=QuantType.QInt8,
            per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
            nodes_to_exclude=exclude + rows,  # rows: per-token int8, written below
            op_types_to_quantize=["MatMul", "Attention"] + (TABLES if tables else []),
            use_external_data_format=True,
            # the fused com.microsoft ops have no type inference: without this it fails
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    proto = load_graph(staged)
    per_token_data = f"{Path(dst).name}.per_token.onnx.data"
    if rows:
        proto = per_token.per_token_int8(proto, rows, folder, per_token_data)
    four = tables and table_bits == 4 and \
        table4.table_to_4bit(proto, fp32_initializer(src)) is not None
    with weights_from(folder):
        head = tables and not four and not set(heads) & set(exclude) and int8_head(proto)
    save_consolidated(proto, _fresh(dst), folder, external_data)
    _fresh(staged)
    _fresh(folder / f"{Path(dst).name}.nbits8.onnx")
    _fresh(folder / f"{Path(dst).name}.per_token.onnx")
    return exclude, head, 4 if four else 8


def fp32_initializer(src: Path) -> Callable[[str], np.ndarray]:
    """name -> that weight's values in the fp32 graph `src` (read from its folder)."""
    from .external import load_graph, read_array

    def read(name: str) -> np.ndarray:
        tensor = next(i for i in load_graph(src).graph.initializer if i.name == name)
        return read_array(tensor, str(Path(src).resolve().parent))
    return read


SLICE = 1 << 22  # elements quantized at a time (16 MB of fp32)


@contextlib.contextmanager
def weights_stay_on_disk() -> Iterator[None]:
    """Two onnxruntime quantizer functions replaced, for this call only, wherever its modules
    imported them: given a ModelProto, quantize_dynamic saves it to a temporary folder and
    reloads it with every weight to infer shapes (twice); here shapes are inferred on the
    graph as it is. And its elementwise quantization runs on slices of a tensor (same
    values), not on four fp32 temporaries of the whole embedding table. (The weights it reads
    come from disk through external.weights_on_disk, around the call.)"""
    import sys

    from onnxruntime.quantization import onnx_quantizer, quant_utils  # noqa: F401 (loaded)

    def infer(model: onnx.ModelProto) -> onnx.ModelProto:
        inferred = onnx.shape_inference.infer_shapes(model)
        quant_utils.add_infer_metadata(inferred)
        return inferred

    def quantize_nparray(qtype: int, arr: np.ndarray, scale: Any, zero_point: Any,
                         low: Any = None, high: Any = None) -> np.ndarray:
        whole = original["quantize_nparray"]
        flat = np.asarray(arr).reshape(-1)
        if flat.size <= SLICE:
            return whole(qtype, arr, scale, zero_point, low, high)
        parts = [whole(qtype, flat[i:i + SLICE], scale, zero_point, low, high)
                 for i in range(0, flat.size, SLICE)]
        return np.concatenate(parts).reshape(np.shape(arr))

    original = {"save_and_reload_model_with_shape_infer":
                quant_utils.save_and_reload_model_with_shape_infer,
                "quantize_nparray": quant_utils.quantize_nparray}
    ours = {"save_and_reload_model_with_shape_infer": infer, "quantize_nparray": quantize_nparray}
    swapped = [(m, name) for mod, m in list(sys.modules.items())
               if mod.startswith("onnxruntime.quantization")
               for name in original if getattr(m, name, None) is original[name]]
    for m, name in swapped:
        setattr(m, name, ours[name])
    try:
        yield
    finally:
        for m, name in swapped:
            setattr(m, name, original[name])


def tied_head_matmuls(proto: onnx.ModelProto) -> list[str]:
    """The MatMuls whose constant weight the embedding Gather also reads: the tied LM head,
    written x @ T by export/tied_table.py."""
    inits = {i.name for i in proto.graph.initializer}
    gathered = {n.input[0] for n in proto.graph.node if n.op_type == "Gather"} & inits
    return [n.name for n in proto.graph.node
            if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in gathered]


def seven_bit_nodes(p: str, x: str, outputs: list[str]) -> tuple[list[onnx.NodeProto],
                                                                  list[onnx.TensorProto]]:
    """DynamicQuantizeLinear's contract (x -> u8 values, scale, zero point; zero exactly
    representable) with 128 levels instead of 256: u8 values in [0, 127]. AVX2 (no VNNI) adds
    u8 x s8 products in pairs in int16: 255 x 128 x 2 saturates, 127 x 128 x 2 does not."""
    from onnx import TensorProto, helper

    q, scale, zero = outputs
    nodes = [
        helper.make_node("ReduceMin", [x], [f"{p}_min0"], keepdims=0),
        helper.make_node("ReduceMax", [x], [f"{p}_max0"], keepdims=0),
        helper.make_node("Min", [f"{p}_min0", f"{p}_0"], [f"{p}_min"]),
        helper.make_node("Max", [f"{p}_max0", f"{p}_0"], [f"{p}_max"]),
        helper.make_node("Sub", [f"{p}_max", f"{p}_min"], [f"{p}_range"]),
        helper.make_node("Div", [f"{p}_range", f"{p}_127"], [f"{p}_s0"]),
        helper.make_node("Max", [f"{p}_s0", f"{p}_eps"], [scale]),
        helper.make_node("Div", [f"{p}_min", scale], [f"{p}_nz"]),
        helper.make_node("Neg", [f"{p}_nz"], [f"{p}_z0"]),
        helper.make_node("Round", [f"{p}_z0"], [f"{p}_zr"]),
        helper.make_node("Clip", [f"{p}_zr", f"{p}_0", f"{p}_127"], [f"{p}_zf"]),
        helper.make_node("Cast", [f"{p}_zf"], [zero], to=TensorProto.UINT8),
        helper.make_node("Div", [x, scale], [f"{p}_xs"]),
        helper.make_node("Round", [f"{p}_xs"], [f"{p}_xr"]),
        helper.make_node("Add", [f"{p}_xr", f"{p}_zf"], [f"{p}_xz"]),
        helper.make_node("Clip", [f"{p}_xz", f"{p}_0", f"{p}_127"], [f"{p}_xc"]),
        helper.make_node("Cast", [f"{p}_xc"], [q], to=TensorProto.UINT8),
    ]
    inits = [numpy_helper.from_array(np.array(v, np.float32), f"{p}_{n}")
             for n, v in (("0", 0.0), ("127", 127.0), ("eps", 1e-12))]
    return nodes, inits


def int8_head(proto: onnx.ModelProto) -> bool:
    """The tied head (x @ T, T read by the embedding Gather too) as the u8 x s8 GEMM with a
    constant, prepacked weight that AVX2, AVX-512 VNNI and ARM dot-product kernels are built
    for. quantize_dynamic stores the shared table once as the Gather's uint8, which makes the
    head u8 x u8: the table and its zero point shift by -128 to int8 (q - z unchanged, the
    embedding rows identical), and the head's activations are quantized to 7 bits so that no
    ISA's int16 pair sums saturate (seven_bit_nodes). True if a head was rewritten."""
    graph = proto.graph
    g = index(graph)
    inits, producer = g.initializers, g.producer
    gathered = {n.input[0] for n in graph.node if n.op_type == "Gather"}
    done = False
    for k, node in enumerate([n for n in graph.node if n.op_type == "MatMulInteger"]):
        table = inits.get(node.input[1])
        zero = inits.get(node.input[3]) if len(node.input) > 3 else None
        dql = producer.get(node.input[0])
        if table is None or table.name not in gathered or zero is None or dql is None \
                or dql.op_type != "DynamicQuantizeLinear" or g.reads(dql.output[0]) != 1:
            continue
        if table.data_type == onnx.TensorProto.UINT8:
            for t in (table, zero):
                shifted = (numpy_helper.to_array(t).astype(np.int16) - 128).astype(np.int8)
                t.CopyFrom(numpy_helper.from_array(shifted, t.name))
        nodes, extra = seven_bit_nodes(f"head7bit{k}", dql.input[0], list(dql.output))
        at = list(graph.node).index(dql)
        graph.node.remove(dql)
        for j, n in enumerate(nodes):
            graph.node.insert(at + j, n)
        graph.initializer.extend(extra)
        done = True
    return done


def convert_fp16(src: Path, dst: Path, external_data: bool) -> None:
    """fp16 weights and compute, fp32 inputs/outputs (for the CUDA provider)."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(src)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(_fresh(dst)), use_external_data_format=external_data)


@dataclasses.dataclass(frozen=True)
class Int4Recipe:
    """One weight-only 4-bit setting; tried in order until the accuracy gate passes."""

    name: str
    block_size: int = 32
    fp32_head: bool = False  # the tied LM head's MatMul left in fp32 (its table is the largest)
    # MatMulNBits' accuracy_level: 4 computes with int8 activations (quantized per block of
    # K: onnxruntime's int8 dot-product kernels); None keeps them fp32
    accuracy_level: int | None = None


# fastest first (int8 compute is the quick one: benchmarks/results/avx2-epyc/table-bits)
INT4_RECIPES = (Int4Recipe("block32+int8_compute", accuracy_level=4), Int4Recipe("block32"),
                Int4Recipe("block32+fp32_head", fp32_head=True))


def quantize_int4(src: Path, dst: Path, external_data: bool,
                  recipe: Int4Recipe = INT4_RECIPES[0], table_bits: int = 8) -> int:
    """Weight-only 4-bit MatMulNBits (symmetric, `recipe.block_size`) for every MatMul with a
    constant weight, then the embedding table as int8 (quantize_dynamic's Gather) or, at
    `table_bits` 4, in 4-bit blocks that the tied head's MatMulNBits reads too (one copy,
    export/table4.py); activations fp32 or, at `recipe.accuracy_level` 4, int8 per block.
    Weights read one at a time from `src`'s folder (export/external.py). Returns the table's
    bits."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from .external import load_graph, save_consolidated, weights_on_disk

    folder = Path(src).resolve().parent
    graph = load_graph(src)
    exclude = tied_head_matmuls(graph) if recipe.fp32_head else []
    four = table_bits == 4 and not exclude and table4.table_to_4bit(
        graph, fp32_initializer(src), recipe.accuracy_level) is not None
    nbits = _fresh(folder / f"{Path(dst).name}.nbits.onnx")
    with weights_on_disk(folder):
        quant = MatMulNBitsQuantizer(graph, block_size=recipe.block_size, is_symmetric=True,
                                     accuracy_level=recipe.accuracy_level,
                                     nodes_to_exclude=exclude)
        quant.process()
    save_consolidated(quant.model.model, nbits, folder)
    del quant, graph
    staged = _fresh(folder / f"{Path(dst).name}.staged.onnx")
    with quiet_quantizer(), weights_on_disk(folder), weights_stay_on_disk():
        quantize_dynamic(load_graph(nbits), str(staged), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["Gather"], use_external_data_format=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    save_consolidated(load_graph(staged), _fresh(dst), folder, external_data)
    _fresh(staged)
    _fresh(nbits)
    return 4 if four else 8


def nbits8(graph: onnx.ModelProto, nodes: list[str], folder: Path, name: str) -> onnx.ModelProto:
    """`nodes` (MatMuls) as 8-bit MatMulNBits, every other node as it was; weights read from
    and written to `folder` (external data), as quantize_int4 does."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from .external import load_graph, save_consolidated, weights_on_disk

    others = [n.name for n in graph.graph.node if n.op_type == "MatMul" and n.name not in nodes]
    staged = _fresh(folder / f"{name}.nbits8.onnx")
    with weights_on_disk(folder):
        quant = MatMulNBitsQuantizer(graph, nodes_to_exclude=others, **NBITS8)
        quant.process()
    save_consolidated(quant.model.model, staged, folder)
    del quant
    return load_graph(staged)


def largest_initializer(path: Path) -> tuple[str, tuple[int, ...], str]:
    """(name, shape, dtype) of the biggest weight: tests use it to see the embedding is int8."""
    proto = onnx.load(str(path))
    best = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    return best.name, tuple(best.dims), str(numpy_helper.to_array(best).dtype)
