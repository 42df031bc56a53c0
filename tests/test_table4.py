"""The word-embedding table in 4-bit blocks (`xlmr export --table-bits 4`): the bytes
export/table4.py writes are what onnxruntime's GatherBlockQuantized and MatMulNBits read, one
copy serves both, and int8 and int4 exports with it are smaller and still answer."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import needs_torch

onnx = pytest.importorskip("onnx")


def _session(packed: np.ndarray, scales: np.ndarray, block: int):
    """GatherBlockQuantized and MatMulNBits (fp32 compute) on one shared initializer, as the
    rewrite wires them."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    vocab, blocks, _ = packed.shape
    hidden = blocks * block
    nodes = [
        helper.make_node("Unsqueeze", ["s", "axis2"], ["s_rows"]),
        helper.make_node("GatherBlockQuantized", ["t", "ids", "s_rows"], ["e"],
                         domain="com.microsoft", gather_axis=0, quantize_axis=2,
                         block_size=block, bits=4),
        helper.make_node("MatMulNBits", ["x", "t", "s"], ["logits"], domain="com.microsoft",
                         K=hidden, N=vocab, bits=4, block_size=block),
    ]
    graph = helper.make_graph(
        nodes, "table4",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [None, None]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, hidden])],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(packed, "t"), numpy_helper.from_array(scales, "s"),
         numpy_helper.from_array(np.array([2], np.int64), "axis2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("hidden", [64, 48])  # 48: blocks of 16
def test_the_blocks_are_what_onnxruntime_reads(hidden):
    from xlmr_serverless.export.table4 import block_for, dequantized, four_bit_blocks

    rng = np.random.default_rng(hidden)
    table = rng.standard_normal((300, hidden)).astype(np.float32) * 0.05
    table[7] = 0.0  # an all-zero row (scale guarded)
    table[9, :5] = [3.0, -3.0, 0.0, 1e-6, -1e-6]  # an outlier in one block only
    block = block_for(hidden)
    packed, scales = four_bit_blocks(table, block)
    assert packed.shape == (300, hidden // block, block // 2) and packed.dtype == np.uint8
    values = dequantized(packed, scales)
    step = np.repeat(scales, block, axis=1)
    assert np.all(np.abs(values - table) <= step / 2 + 1e-7)  # round to nearest of 15 levels
    assert np.all(values[7] == 0) and values[9, 0] == pytest.approx(3.0)
    assert np.all(values[9, block:] == pytest.approx(table[9, block:], abs=0.05 / 2))

    ids = np.array([[0, 7, 9, 299], [5, 5, 1, 2]], np.int64)
    x = rng.standard_normal((3, hidden)).astype(np.float32)
    embedded, logits = _session(packed, scales, block).run(None, {"ids": ids, "x": x})
    np.testing.assert_array_equal(embedded.reshape(2, 4, hidden), values[ids])
    np.testing.assert_allclose(logits, x @ values.T, rtol=1e-4, atol=1e-4)


def test_table_bits_are_refused_before_torch_loads(tmp_path):
    from xlmr_serverless.export.errors import ExportError
    from xlmr_serverless.export.preflight import preflight

    with pytest.raises(ExportError, match="8 or 4"):
        preflight(tmp_path, "fill-mask", ("int8",), table_bits=2)
    with pytest.raises(ExportError, match="int8 and int4"):
        preflight(tmp_path, "fill-mask", ("fp32", "fp16"), table_bits=4)
    preflight(tmp_path, "fill-mask", ("fp32", "int8"), table_bits=4)
    preflight(tmp_path, "fill-mask", ("int4",), table_bits=4)


def _tables(path):
    """{initializer name: (dims, readers' op types)} of the file's vocab-sized tables."""
    graph = onnx.load(str(path), load_external_data=False).graph
    vocab = max(max(i.dims, default=0) for i in graph.initializer)
    return {i.name: (tuple(i.dims), sorted(n.op_type for n in graph.node if i.name in n.input))
            for i in graph.initializer if vocab in i.dims and len(i.dims) > 1}


@needs_torch
@pytest.mark.main_env_only
def test_int8_and_int4_exports_with_a_4bit_table_are_smaller_and_answer(model_factory,
                                                                      bundle_factory, tmp_path):
    """fill-mask: the tied table, read by the embedding and the head."""
    from xlmr_serverless.export.build import ExportOptions, build_bundle
    from xlmr_serverless.runtime import load

    model = model_factory("fill-mask")
    folder = tmp_path / "b"
    build_bundle(model, "fill-mask", folder, ExportOptions(
        precisions=("fp32", "int8", "int4"), min_agreement=0.0, optimize=True, table_bits=4),
        log=lambda s: None)
    eight = bundle_factory("fill-mask")  # the same checkpoint, int8 with its table in 8 bits
    config = json.loads((model / "config.json").read_text())
    vocab, hidden = config["vocab_size"], config["hidden_size"]
    size = {p: (folder / f"model.{p}.onnx.data").stat().st_size for p in ("int8", "int4")}
    assert size["int8"] <= (eight / "model.int8.onnx.data").stat().st_size - vocab * hidden * 0.3
    assert size["int4"] <= size["int8"] + vocab * hidden * 0.1  # no second copy of the table

    manifest = json.loads((folder / "manifest.json").read_text())
    for precision in ("int8", "int4"):
        tables = _tables(folder / f"model.{precision}.onnx")
        (name, (dims, readers)), = [(k, v) for k, v in tables.items()
                                    if not k.endswith("scales")]
        assert dims == (vocab, hidden // 32, 16)  # one copy, 4 bits a weight
        assert readers == ["GatherBlockQuantized", "MatMulNBits"]
        tried = manifest["parity"][f"{precision}_recipes_tried"]
        assert [t["table_bits"] for t in tried] == [4]
        # random weights: the gate is off here, and still the answers are mostly fp32's (a
        # wrong nibble order or scale would make them noise)
        assert manifest["parity"][precision]["top1_agreement"] >= 0.6

    text = "Paris est la <mask> de la France."
    reference = load(folder, precision="fp32")(text)
    for precision in ("int8", "int4"):
        answer = load(folder, precision=precision)(text)
        assert len(answer) == len(reference) and answer[0].keys() == reference[0].keys()


@needs_torch
@pytest.mark.main_env_only
def test_an_untied_table_is_rewritten_for_its_gather_alone(model_factory, bundle_factory,
                                                           tmp_path):
    """text-classification: the table only the embedding reads, in int8 and int4 files,
    quantized from an exported fp32 graph (no export of its own: the bundle's fp32 file)."""
    import shutil

    import onnxruntime as ort

    from xlmr_serverless.export import quantize

    bundle = bundle_factory("text-classification")
    config = json.loads((model_factory("text-classification") / "config.json").read_text())
    vocab, hidden = config["vocab_size"], config["hidden_size"]
    work = tmp_path / "w"
    work.mkdir()
    for f in ("model.fp32.onnx", "model.fp32.onnx.data"):
        shutil.copy(bundle / f, work / f)
    fp32 = work / "model.fp32.onnx"
    for recipe in quantize.INT8_RECIPES[::-1]:  # every recipe's graph; the default's kept
        _, head, bits = quantize.quantize_int8(fp32, work / "t4.onnx", recipe, True, hidden,
                                               config["intermediate_size"], 4)
        assert (recipe.name, head, bits) == (recipe.name, False, 4)
    assert quantize.quantize_int4(fp32, work / "i4.onnx", True, table_bits=4) == 4
    for path in (work / "t4.onnx", work / "i4.onnx"):
        (dims, readers), = [v for k, v in _tables(path).items() if not k.endswith("scales")]
        assert dims == (vocab, hidden // 32, 16) and readers == ["GatherBlockQuantized"]

    ids = np.array([[0, 35378, 8999, 38, 2]], np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    outs = {p: ort.InferenceSession(str(p)).run(None, feed)[0]
            for p in (fp32, bundle / "model.int8.onnx", work / "t4.onnx")}
    scale = np.abs(outs[fp32]).max()
    eight, four = (np.abs(outs[p] - outs[fp32]).max() for p in list(outs)[1:])
    # measured: logits within 1.27, 8 bits off by 0.035, 4 bits by 0.068; the nibbles swapped
    # (a wrong layout) by 1.32
    assert four < 0.25 * scale and four < 5 * eight + 1e-3


@needs_torch
@pytest.mark.main_env_only
def test_the_gate_names_the_table_when_it_fails(bundle_factory, tmp_path):
    from types import SimpleNamespace

    from xlmr_serverless.export import ExportError, gate
    from xlmr_serverless.export.job import WriteJob
    from xlmr_serverless.runtime.tasks import task_spec

    fp32 = bundle_factory("text-classification") / "model.fp32.onnx"
    job = WriteJob(fp32, tmp_path / "x.onnx", True, task_spec("text-classification"),
                   SimpleNamespace(), [], 0.99, lambda s: None, table_bits=4)
    with pytest.raises(ExportError, match="export --precision fp32, drop --table-bits 4 or"):
        gate.with_gate(job, "int8", [], lambda recipe: {})  # no recipe passes
