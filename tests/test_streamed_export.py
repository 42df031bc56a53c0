"""The memory-bounded export: the graph traced without weights and the weights streamed into
page-aligned external data; onnxruntime's optimizer and quantizer working on graphs whose
weights stay on disk (same results as in memory); a consolidated file self-contained; the
full-size random checkpoints written in chunks and loadable by transformers."""
from __future__ import annotations

import shutil
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.conftest import needs_torch
from xlmr_serverless.runtime.tasks import task_spec

pytestmark = [needs_torch, pytest.mark.main_env_only]

ROOT = Path(__file__).resolve().parents[1]


def _arrays(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


@pytest.fixture(scope="module")
def raw_fill_mask(model_factory, tmp_path_factory):
    """A tiny fill-mask checkpoint exported the streamed way, with its torch model."""
    from xlmr_serverless.export import models, onnx_export

    folder = model_factory("fill-mask")
    model = models.load_model(folder, "fill-mask")
    path = tmp_path_factory.mktemp("raw") / "model.raw.onnx"
    onnx_export.export_onnx(model, task_spec("fill-mask"), path, model.config.vocab_size - 1)
    return model, path


def test_weights_are_streamed_aligned_and_stored_once(raw_fill_mask):
    from xlmr_serverless.export.external import ALIGN

    model, path = raw_fill_mask
    graph = onnx.load(str(path), load_external_data=False).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    big = [t for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert big and all(int({e.key: e.value for e in t.external_data}["offset"]) % ALIGN == 0
                       for t in big)
    inits = {t.name for t in graph.initializer}
    # no Identity / Transpose left reading a weight: the quantizer sees constant MatMul weights
    assert not [n for n in graph.node if n.op_type in ("Identity", "Transpose")
                and n.input[0] in inits]
    # the tied table once, transposed [hidden, vocab]; its values the embedding's
    values = _arrays(path)
    table = model.get_input_embeddings().weight.detach().numpy()
    tied = [name for name, v in values.items() if v.shape == table.T.shape]
    assert len(tied) == 1 and np.array_equal(values[tied[0]], table.T)
    assert not [name for name, v in values.items() if v.shape == table.shape]


def test_optimizer_and_quantizer_read_weights_from_disk_with_the_same_results(raw_fill_mask,
                                                                              tmp_path):
    """The fused graph and the int8 file written with the weights on disk equal what
    onnxruntime's tools write with the whole model in memory; their functions restored."""
    from onnxruntime.quantization import QuantType, quant_utils, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    from xlmr_serverless.export import quantize
    from xlmr_serverless.export.optimize import optimize

    model, raw = raw_fill_mask
    heads, hidden = model.config.num_attention_heads, model.config.hidden_size
    fused = raw.with_name("model.opt.onnx")
    stats = optimize(raw, fused, heads, hidden, external_data=True)
    assert stats["Attention"] == model.config.num_hidden_layers
    whole = optimize_model(str(raw), model_type="bert", num_heads=heads, hidden_size=hidden,
                           opt_level=0)
    whole.save_model_to_file(str(tmp_path / "whole.onnx"))
    ours, theirs = _arrays(fused), _arrays(tmp_path / "whole.onnx")
    assert ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[k], theirs[k]) for k in ours)

    original = quant_utils.tensor_proto_to_array
    q = tmp_path / "q.onnx"
    quantize.quantize_int8(fused, q, quantize.Int8Recipe("default", int8_head=False), True,
                           hidden, model.config.intermediate_size)
    assert quant_utils.tensor_proto_to_array is original
    assert not list(fused.parent.glob("*staged*"))
    quantize_dynamic(str(tmp_path / "whole.onnx"), str(tmp_path / "qw.onnx"),
                     weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Attention", "Gather",
                                           "EmbedLayerNormalization"],
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    ours, theirs = _arrays(q), _arrays(tmp_path / "qw.onnx")
    assert ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[k], theirs[k]) for k in ours)


def test_the_optimizer_holds_no_weight_it_does_not_change(raw_fill_mask, tmp_path):
    """The replacements reach the classes onnxruntime's optimizer calls (its modules import
    each other top-level: `fusion_utils`, not `onnxruntime.transformers.fusion_utils`): every
    weight read comes from disk and is not kept, and Attention's fused Q/K/V weights go to a
    file as they are made, so no weight is inline in the graph the fusions hand around."""

    from onnxruntime.transformers.optimizer import optimize_model

    from xlmr_serverless.export import external

    model, raw = raw_fill_mask
    folder = tmp_path / "g"
    folder.mkdir()
    for f in raw.parent.glob("model.raw.onnx*"):
        shutil.copy(f, folder / f.name)
    helper = external._transformers_tool("fusion_utils", "NumpyHelper")
    graph_class = external._transformers_tool("onnx_model", "OnnxModel")
    originals = helper.__dict__["to_array"], graph_class.__dict__["add_initializer"]
    with external.weights_from(folder), external.reads_from_disk(), \
            external.new_weights_to_disk(Path("made.data")):
        assert helper.__dict__["to_array"] is not originals[0]
        fused = optimize_model(external.load_graph(folder / "model.raw.onnx"), model_type="bert",
                               num_heads=model.config.num_attention_heads,
                               hidden_size=model.config.hidden_size, opt_level=0)
    assert (helper.__dict__["to_array"], graph_class.__dict__["add_initializer"]) == originals
    proto = fused.model
    assert sum(n.op_type == "Attention" for n in proto.graph.node) == \
        model.config.num_hidden_layers
    inline = [t.name for t in proto.graph.initializer
              if t.data_location != onnx.TensorProto.EXTERNAL
              and len(t.raw_data) >= external.INLINE_BELOW]
    assert not inline
    made = [t for t in proto.graph.initializer
            if any(e.key == "location" and e.value == "made.data" for e in t.external_data)]
    assert len(made) >= model.config.num_hidden_layers  # at least each layer's Q/K/V weight
    assert (folder / "made.data").stat().st_size >= sum(
        int(np.prod(t.dims)) * 4 for t in made)


def test_chunked_quantization_gives_the_same_values():
    from onnx import TensorProto
    from onnxruntime.quantization import quant_utils

    from xlmr_serverless.export import quantize

    rows = quantize.SLICE // 2 + 3  # 2.5 slices and a bit: the last slice is partial
    x = np.random.default_rng(0).standard_normal((rows, 5), dtype=np.float32)
    want = quant_utils.quantize_nparray(TensorProto.INT8, x, np.float32(0.01), np.int8(0))
    with quantize.weights_stay_on_disk():
        got = quant_utils.quantize_nparray(TensorProto.INT8, x, np.float32(0.01), np.int8(0))
    assert got.dtype == want.dtype and np.array_equal(got, want)


def test_consolidated_file_is_self_contained(raw_fill_mask, tmp_path):
    """Weights from another file and from memory end in dst.data; the file loads alone."""
    from xlmr_serverless.export.external import load_graph, save_consolidated

    _, raw = raw_fill_mask
    proto = load_graph(raw)
    extra = numpy_helper.from_array(np.arange(1000, dtype=np.float32), "in_memory")
    proto.graph.initializer.append(extra)
    save_consolidated(proto, tmp_path / "c.onnx", raw.parent)
    alone = tmp_path / "alone"
    alone.mkdir()
    for f in ("c.onnx", "c.onnx.data"):
        shutil.copy(tmp_path / f, alone / f)
    got, want = _arrays(alone / "c.onnx"), _arrays(raw)
    assert np.array_equal(got.pop("in_memory"), np.arange(1000, dtype=np.float32))
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in got)
    save_consolidated(load_graph(raw), tmp_path / "inline.onnx", raw.parent, external=False)
    assert not (tmp_path / "inline.onnx.data").exists()
    assert all(np.array_equal(v, want[k]) for k, v in _arrays(tmp_path / "inline.onnx").items())


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_random_checkpoint_streams_into_loadable_shards(tmp_path, dtype):
    """A full-size generator at a small shape: sharded safetensors with an index, read by
    from_pretrained, tied head once, LayerNorm 1 / bias 0 / N(0, 0.02); written with at most
    a few chunks in memory at once."""
    import torch
    import transformers

    sys.path.insert(0, str(ROOT))
    from benchmarks import random_checkpoint as rc

    shape = dict(rc.SHAPES["xl"], hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=128)
    config = rc.config_for(shape, "fill-mask")
    chunk = 1 << 16
    tracemalloc.start()
    rc.write_checkpoint(tmp_path, config, "fill-mask", dtype, shard_bytes=20_000_000,
                        chunk=chunk)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    table_bytes = 250880 * 64 * 4
    assert peak < table_bytes / 4  # never the table, let alone the model, in memory
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    assert (tmp_path / "model.safetensors.index.json").exists()
    model = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path, dtype=torch.float32)
    assert type(model).__name__ == "XLMRobertaXLForMaskedLM"
    emb = model.get_input_embeddings().weight.detach()
    assert emb.shape == (250880, 64) and model.lm_head.decoder.weight.data_ptr() == emb.data_ptr()
    assert abs(float(emb.std()) - 0.02) < 1e-3
    norms = [p for n, p in model.named_parameters() if "norm" in n.lower() and n.endswith("weight")]
    assert norms and all(bool((p == 1).all()) for p in norms)
    if dtype == "bf16":  # fp32 values rounded to bf16: every value has 7 mantissa bits
        bits = emb.detach().numpy().view(np.uint32)
        assert not (bits & 0xFFFF).any()


def test_bf16_checkpoint_exports_without_inflating(tmp_path):
    """A bf16 checkpoint loads as bf16 (never converted to fp32 as a whole), runs in fp32 one
    module at a time for the reference, and exports an fp32 graph that matches it."""
    import torch

    sys.path.insert(0, str(ROOT))
    from benchmarks import random_checkpoint as rc
    from tests.factory import save_xlmr_tokenizer
    from xlmr_serverless.export import models
    from xlmr_serverless.export.build import ExportOptions, build_bundle

    shape = dict(rc.SHAPES["base"], hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64)
    folder = rc.write_checkpoint(tmp_path / "ckpt", rc.config_for(shape, "text-classification"),
                                 "text-classification", "bf16")
    save_xlmr_tokenizer(folder)
    model = models.load_model(folder, "text-classification")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ids = torch.tensor([[0, 5, 6, 7, 2]])
    with models.fp32_compute(model), torch.no_grad():
        got = model(input_ids=ids).logits
    assert got.dtype == torch.float32
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}  # cast back after use
    with torch.no_grad():
        want = model.float()(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-6)
    m = build_bundle(folder, "text-classification", tmp_path / "b",
                     ExportOptions(precisions=("fp32",)), log=lambda s: None)
    assert m.parity["fp32"]["max_abs_diff"] <= 1e-4
