"""export/: every task and architecture exports with fused ops and PyTorch parity; the bundle
is self-describing and its tokenizer tokenizes as the source's; bad input is a clear error."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.conftest import TEXTS, needs_torch, rewrite_manifest
from xlmr_serverless.runtime.tasks import names

pytestmark = needs_torch

TASKS = list(names())  # every task the registry serves


@pytest.mark.parametrize("arch", ["xlm-roberta", "roberta", "xlm-roberta-xl"])
@pytest.mark.parametrize("task", TASKS)
def test_every_task_and_architecture(bundle_factory, task, arch):
    from xlmr_serverless.runtime.manifest import read_manifest, verify_files

    folder = bundle_factory(task, arch)
    m = read_manifest(folder)
    verify_files(m, folder)
    assert (m.task, m.architecture, m.max_length) == (task, arch, 512)
    assert m.inputs == ("input_ids", "attention_mask")
    assert m.parity["fp32"]["max_abs_diff"] <= 1e-4
    assert {f.precision for f in m.files} == {"fp32", "int8"}
    assert all(f.external_data for f in m.files)  # weights in <file>.data, mapped at load
    graph = onnx.load(str(folder / "model.fp32.onnx"), load_external_data=False).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    if task in ("text-classification", "zero-shot-classification", "token-classification"):
        assert m.id2label and m.label2id and len(m.id2label) == len(m.label2id)
    # readable by Lambda's non-root user once COPY'd into an image
    assert {oct(p.stat().st_mode & 0o777) for p in folder.iterdir()} == {"0o644"}
    assert folder.stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("arch", ["xlm-roberta", "roberta"])
def test_fusions_are_counted(bundle_factory, arch):
    """A torch or onnxruntime upgrade that loses the fusions fails here, not in production."""
    from xlmr_serverless.export.optimize import count_ops

    m = json.loads((bundle_factory("feature-extraction", arch) / "manifest.json").read_text())
    assert m["parity"]["fused_ops"].get("Attention") == 2  # one per layer
    assert m["parity"]["fused_ops"].get("BiasGelu") == 2
    ops = count_ops(bundle_factory("feature-extraction", arch) / "model.fp32.onnx")
    assert ops["Attention"] == 2 and ops["Softmax"] == 0
    # left apart on purpose: on CPU slower fused (docs/design/skip-layer-norm.md)
    assert ops["SkipLayerNormalization"] == 0 and ops["LayerNormalization"] == 1 + 2 * 2


def test_the_cuda_file_keeps_skip_layer_norm(bundle_factory):
    """The fp16 file is for CUDA, whose SkipLayerNormalization kernel the CPU's slowness does
    not concern: it is written from the graph with that fusion; the CPU files without."""
    from xlmr_serverless.export.optimize import count_ops

    folder = bundle_factory("text-classification", precisions=("fp32", "int8", "fp16"))
    ops = {p: count_ops(folder / f"model.{p}.onnx") for p in ("fp32", "int8", "fp16")}
    assert ops["fp16"]["SkipLayerNormalization"] == 4 and ops["fp16"]["Attention"] == 2
    assert ops["fp32"]["SkipLayerNormalization"] == ops["int8"]["SkipLayerNormalization"] == 0
    assert ops["fp32"]["Attention"] == 2


@pytest.mark.main_env_only
@pytest.mark.parametrize("fused,kept", [
    ([5.0, 11.0, 5.0], {"fp32": True, "int8": True}),  # faster
    ([10.4, 10.4, 10.4], {"fp32": True, "int8": True}),  # within the margin: kept
    ([12.0, 9.0, 12.0], {"fp32": True, "int8": True}),  # not slower in every round: kept
    ([20.0, 20.0, 20.0], {"fp32": False, "int8": False})])  # clearly slower
def test_fusions_decided_per_precision_on_its_own_graph(model_factory, tmp_path, monkeypatch,
                                                         fused, kept):
    """Each CPU precision's file is written from both graphs and timed in alternating rounds
    (the int8 graph is where fusion gives QAttention); fusions stay unless clearly slower."""
    from xlmr_serverless.export import optimize
    from xlmr_serverless.export.build import ExportOptions, build_bundle
    from xlmr_serverless.export.optimize import count_ops

    real = optimize.alternating_ms
    timed: list[set[str]] = []

    def fake(paths, feed, **kw):
        real(paths, feed, rounds=1, runs=1)  # the files really load and run
        timed.append({Path(p).name for p in paths.values()})
        return {"fused": fused, "unfused": [10.0, 10.0, 10.0]}

    monkeypatch.setattr(optimize, "alternating_ms", fake)
    m = build_bundle(model_factory("text-classification", "roberta"), "text-classification",
                     tmp_path / "b", ExportOptions(precisions=("fp32", "int8"), min_agreement=0.0),
                     log=lambda s: None)
    assert timed == [{"probe.fused.fp32.onnx", "probe.unfused.fp32.onnx"},
                     {"probe.fused.int8.onnx", "probe.unfused.int8.onnx"}]
    for f in m.files:
        assert m.parity["optimize"][f.precision]["kept"] == ("fused" if kept[f.precision]
                                                             else "unfused")
        assert f.optimized is kept[f.precision]
    assert (count_ops(tmp_path / "b" / "model.fp32.onnx")["Attention"] > 0) is kept["fp32"]
    assert (count_ops(tmp_path / "b" / "model.int8.onnx")["QAttention"] > 0) is kept["int8"]
    assert not list((tmp_path / "b").glob("probe*"))


@pytest.mark.main_env_only
def test_big_models_keep_fusions_untimed(model_factory, tmp_path, monkeypatch):
    """Above PROBE_MAX_BYTES of fp32 weights (XL) no probe files are written or timed: the
    fusions are kept, and the manifest says why."""
    from xlmr_serverless.export import build, optimize
    from xlmr_serverless.export.build import ExportOptions, build_bundle

    monkeypatch.setattr(build, "PROBE_MAX_BYTES", 1)
    monkeypatch.setattr(optimize, "alternating_ms", lambda *a, **k: pytest.fail("timed"))
    m = build_bundle(model_factory("text-classification", "roberta"), "text-classification",
                     tmp_path / "b", ExportOptions(precisions=("int8",), min_agreement=0.0),
                     log=lambda s: None)
    record = m.parity["optimize"]["int8"]
    assert record["kept"] == "fused" and "not_timed" in record and m.files[0].optimized


@pytest.mark.main_env_only
def test_int4_is_gated_unfused_with_an_int8_embedding(model_factory, tmp_path):
    """int4: every MatMul weight 4-bit (from the unfused graph: a fused Attention's Q, K, V
    would stay fp32), the embedding table int8, no fp32 copy of it; judged by the gate."""
    from xlmr_serverless.export.build import ExportOptions, build_bundle
    from xlmr_serverless.export.optimize import count_ops

    out = tmp_path / "b"
    m = build_bundle(model_factory("fill-mask"), "fill-mask", out,
                     ExportOptions(precisions=("int4",), min_agreement=0.0), log=lambda s: None)
    f = m.files[0]
    assert f.recipe == "block32+int8_compute" and not f.optimized  # the fastest recipe first
    tried = m.parity["int4_recipes_tried"]
    assert tried[0]["recipe"] == f.recipe and "top1_agreement" in tried[0]
    assert tried[0]["accuracy_level"] == 4
    assert m.parity["int4_gate"]["measure"] == "topk"
    ops = count_ops(out / f.path)
    assert ops["MatMulNBits"] > 0 and not ops["Attention"]
    proto = onnx.load(str(out / f.path))
    levels = {a.i for n in proto.graph.node if n.op_type == "MatMulNBits"
              for a in n.attribute if a.name == "accuracy_level"}
    assert levels == {4}  # int8 activations in every 4-bit MatMul
    weights = {t.name for t in proto.graph.initializer}
    fp32 = [n.name for n in proto.graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    assert all("Gemm" in n for n in fp32)  # the head's dense on 2-D rows is a Gemm: not taken
    table = sorted((250002, json.loads((model_factory("fill-mask") / "config.json").read_text())
                    ["hidden_size"]))
    tables = [t for t in proto.graph.initializer if sorted(t.dims) == table]
    # one table, the Gather's, in int8; the head reads MatMulNBits' packed 4-bit copy
    assert [onnx.TensorProto.DataType.Name(t.data_type) for t in tables] == ["UINT8"]


def test_fill_mask_head_runs_on_mask_rows_only(bundle_factory):
    import onnxruntime as ort

    folder = bundle_factory("fill-mask")
    sess = ort.InferenceSession(str(folder / "model.fp32.onnx"))
    ids = np.array([[0, 250001, 9, 250001, 2], [0, 7, 250001, 2, 1]])
    (logits,) = sess.run(None, {"input_ids": ids, "attention_mask": (ids != 1).astype(np.int64)})
    assert logits.shape == (3, 250002)  # three masks, not 2 x 5 positions


@pytest.mark.parametrize("task", ["fill-mask", "causal-lm"])
def test_tied_lm_weights_stored_once(bundle_factory, model_factory, task):
    """The 250k x hidden table appears once in fp32 and once (as int8) in the int8 file."""
    from safetensors import safe_open

    folder = bundle_factory(task)
    with safe_open(str(model_factory(task) / "model.safetensors"), "np") as f:
        table = f.get_tensor(next(k for k in f.keys() if "word_embeddings" in k))
    def on_disk(name):  # the graph plus its external weights
        return sum(p.stat().st_size for p in folder.glob(f"model.{name}.onnx*"))

    fp32, int8 = on_disk("fp32"), on_disk("int8")
    assert table.nbytes < fp32 < 1.5 * table.nbytes
    assert table.nbytes / 4 < int8 < 0.6 * table.nbytes  # embedding quantized as a Gather
    from xlmr_serverless.export.quantize import largest_initializer

    assert largest_initializer(folder / "model.fp32.onnx")[1] == table.shape[::-1]  # T = W^T
    assert largest_initializer(folder / "model.int8.onnx")[1:] == (table.shape[::-1], "int8")
    m = json.loads((folder / "manifest.json").read_text())
    assert m["parity"]["int8_recipes_tried"][0]["int8_head_gemm"]  # no fp32 copy per run
    # the head: activations on the left, the one int8 table (the Gather's too) on the right
    proto = onnx.load(str(folder / "model.int8.onnx"), load_external_data=False)
    big = largest_initializer(folder / "model.int8.onnx")[0]
    readers = {n.op_type: list(n.input).index(big) for n in proto.graph.node if big in n.input}
    assert readers == {"Gather": 0, "MatMulInteger": 1}


@pytest.mark.main_env_only
@pytest.mark.parametrize("x_shape", [(16, 24), (2, 16, 24)])  # fill-mask rows; causal-lm batch
def test_the_shared_table_becomes_signed_for_the_head(x_shape):
    """quantize_dynamic of Gather(T) + x @ T shares one uint8 table (u8 x u8 in the head);
    int8_head shifts it to int8 with its zero point (the same embedding rows, bit for bit) and
    quantizes the head's activations to 7 bits: logits within that rounding of the u8 x u8
    ones, and never the saturated sums full-range u8 x s8 gives on AVX2."""
    import tempfile

    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from xlmr_serverless.export.quantize import int8_head, tied_head_matmuls

    rng = np.random.default_rng(0)
    hidden, vocab = x_shape[-1], 300
    t = (rng.standard_normal((hidden, vocab)) * 0.1).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["T", "ids"], ["e"], axis=1),
         helper.make_node("MatMul", ["x", "T"], ["y"], name="head")], "tied",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None] * len(x_shape)),
         helper.make_tensor_value_info("ids", TensorProto.INT64, [None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("e", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(t, "T")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert tied_head_matmuls(proto) == ["head"]
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(proto, f"{tmp}/f.onnx")
        quantize_dynamic(f"{tmp}/f.onnx", f"{tmp}/q.onnx", weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gather"])
        q = onnx.load(f"{tmp}/q.onnx")
    tables = [i for i in q.graph.initializer if tuple(i.dims) == (hidden, vocab)]
    assert len(tables) == 1 and tables[0].data_type == TensorProto.UINT8  # shared, unsigned
    x = rng.standard_normal(x_shape).astype(np.float32)
    ids = np.array([[0, 5, 299]])

    def run(p):
        sess = ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {"x": x, "ids": ids})

    before = run(q)
    assert int8_head(q)
    tables = [i for i in q.graph.initializer if tuple(i.dims) == (hidden, vocab)]
    assert len(tables) == 1 and tables[0].data_type == TensorProto.INT8
    after = run(q)
    np.testing.assert_array_equal(after[1], before[1])
    exact = x.reshape(-1, hidden) @ t  # fp32 logits
    step = (max(x.max(), 0) - min(x.min(), 0)) / 127  # one 7-bit step of x
    t_step = (max(t.max(), 0) - min(t.min(), 0)) / 255  # one 8-bit step of the table
    rows = np.abs(x.reshape(-1, hidden)).sum(-1, keepdims=True)
    bound = step / 2 * np.abs(t).sum(0) + t_step / 2 * rows + step * t_step * hidden / 4 + 1e-5
    assert (np.abs(after[0].reshape(exact.shape) - exact) <= bound).all()
    assert (after[0].reshape(exact.shape).argmax(-1) == exact.argmax(-1)).mean() >= 0.9
    assert not int8_head(q)  # nothing left to convert


@pytest.mark.main_env_only
def test_all_precisions_and_forced_external_data(model_factory, tmp_path):
    from xlmr_serverless.export.build import ExportOptions, build_bundle
    from xlmr_serverless.runtime import load, precisions

    out = tmp_path / "b"
    m = build_bundle(model_factory("text-classification"), "text-classification", out,
                     ExportOptions(precisions=precisions.NAMES, min_agreement=0.0),
                     log=lambda s: None)
    by = {f.precision: f for f in m.files}
    assert {p: f.provider for p, f in by.items()} == \
        {name: entry.provider for name, entry in precisions.REGISTRY.items()}
    assert {"fp32", "int8", "int4", "fp16"} <= set(by)
    for p in (name for name, entry in precisions.REGISTRY.items() if entry.provider == "cpu"):
        assert by[p].external_data, p  # weights in <file>.data
        assert (out / by[p].external_data[0]["path"]).stat().st_size > by[p].size
        pipe = load(out, precision=p)
        assert pipe(TEXTS[0])[0]["label"] in {"negative", "neutral", "positive"}
    ops = onnx.load(str(out / by["int4"].path), load_external_data=False).graph.node
    assert any(n.op_type == "MatMulNBits" for n in ops)
    fp16 = onnx.load(str(out / by["fp16"].path))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer)


@pytest.mark.main_env_only
def test_inline_weights(model_factory, tmp_path):
    """--inline-weights: one file per precision, even when the export's own files were external."""
    from xlmr_serverless.export.build import ExportOptions, build_bundle
    from xlmr_serverless.runtime import load

    out = tmp_path / "b"
    m = build_bundle(model_factory("text-classification", "roberta"), "text-classification", out,
                     ExportOptions(precisions=("fp32", "int8"), external_data=False,
                                   min_agreement=0.0),
                     log=lambda s: None)
    assert not any(f.external_data for f in m.files)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "manifest.json.sha256",
                                                      "model.fp32.onnx", "model.int8.onnx",
                                                      "tokenizer.json"]
    assert load(out, precision="fp32")(TEXTS[1])[0]["label"]


@pytest.mark.main_env_only
def test_int8_gate_fails_with_figures(model_factory, tmp_path):
    from xlmr_serverless.export import ExportError
    from xlmr_serverless.export.build import ExportOptions, build_bundle

    with pytest.raises(ExportError, match=r"int8 accuracy gate failed .*default: .*fp32_ffn"):
        build_bundle(model_factory("token-classification"), "token-classification",
                     tmp_path / "b", ExportOptions(min_agreement=1.01), log=lambda s: None)
    assert not (tmp_path / "b").exists() and not list(tmp_path.iterdir())  # no debris


@pytest.fixture(scope="module")
def tokenizer_pairs(bundle_factory, model_factory):
    """(source tokenizer, bundle tokenizer) per architecture, loaded once: the XLM-R pair
    takes seconds to load, and the texts below only read them."""
    from transformers import AutoTokenizer

    from xlmr_serverless.runtime.tokenization import TextTokenizer

    return {arch: (AutoTokenizer.from_pretrained(str(model_factory("fill-mask", arch))),
                   TextTokenizer(bundle_factory("fill-mask", arch) / "tokenizer.json"))
            for arch in ("xlm-roberta", "roberta")}


@pytest.mark.parametrize("text", TEXTS + ["Paris is the <mask> of France.", "a <mask>b", "<s>x</s>"])
def test_bundle_tokenizer_matches_source(tokenizer_pairs, text):
    for src, ours in tokenizer_pairs.values():
        ref = src(text, return_offsets_mapping=True)
        enc = ours.encode([text])[0]
        assert enc.ids == ref["input_ids"]
        assert enc.offsets == [tuple(o) for o in ref["offset_mapping"]]
        assert ours.decode(enc.ids) == src.decode(ref["input_ids"])


def test_mask_takes_the_space_on_its_left(bundle_factory):
    from xlmr_serverless.runtime.tokenization import TextTokenizer

    tok = TextTokenizer(bundle_factory("fill-mask") / "tokenizer.json")
    ids = tok.encode(["the <mask>."])[0].ids
    assert ids[2] == 250001 and tok.id_to_token(ids[1]) == "▁the"


@pytest.mark.main_env_only
def test_existing_bundle_survives_a_failed_export(bundle_factory, model_factory, tmp_path):
    from xlmr_serverless.export import ExportError
    from xlmr_serverless.export.build import ExportOptions, build_bundle

    out = tmp_path / "bundle"
    shutil.copytree(bundle_factory("text-classification"), out)
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(ExportError):
        build_bundle(model_factory("text-classification"), "text-classification", out,
                     ExportOptions(min_agreement=1.01), log=lambda s: None)
    assert sorted(p.name for p in out.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_bad_inputs_are_clear_errors(model_factory, tmp_path):
    from transformers import BertConfig, BertModel

    from xlmr_serverless.export import ExportError
    from xlmr_serverless.export.build import build_bundle

    src = model_factory("fill-mask")
    with pytest.raises(ExportError, match="unknown task 'summarize'"):
        build_bundle(src, "summarize", tmp_path / "a")
    with pytest.raises(ExportError, match="needs a \\*ForQuestionAnswering checkpoint"):
        build_bundle(src, "question-answering", tmp_path / "a")
    with pytest.raises(ExportError, match="model folder not found"):
        build_bundle(tmp_path / "nope", "fill-mask", tmp_path / "a")
    with pytest.raises(ExportError, match="needs an NLI model"):
        build_bundle(model_factory("text-classification"), "zero-shot-classification", tmp_path / "a")
    bert = tmp_path / "bert"
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(str(bert))
    with pytest.raises(ExportError, match="model_type 'bert' is not supported; supported: xlm-roberta"):
        build_bundle(bert, "feature-extraction", tmp_path / "a")
    assert not (tmp_path / "a").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output(model_factory, tmp_path):
    from xlmr_serverless.export import ExportError
    from xlmr_serverless.export.build import build_bundle

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(ExportError, match="cannot write"):
        build_bundle(model_factory("fill-mask"), "fill-mask", locked / "out")


def test_unwritable_output_as_a_file(model_factory, tmp_path):
    from xlmr_serverless.export import ExportError
    from xlmr_serverless.export.build import build_bundle

    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="cannot write|not a folder"):
        build_bundle(model_factory("fill-mask"), "fill-mask", tmp_path / "file" / "out")
    with pytest.raises(ExportError, match="not a folder"):
        build_bundle(model_factory("fill-mask"), "fill-mask", tmp_path / "file")


def test_task_auto(model_factory, tmp_path):
    from xlmr_serverless.export.build import ExportOptions, build_bundle

    m = build_bundle(model_factory("zero-shot-classification"), "auto", tmp_path / "z",
                     ExportOptions(precisions=("fp32",)), log=lambda s: None)
    assert m.task == "zero-shot-classification"


def test_loading_a_damaged_bundle_says_which(bundle_factory, tmp_path):
    from xlmr_serverless.runtime import BundleError, load

    def copy():
        dst = tmp_path / f"b{len(list(tmp_path.iterdir()))}"
        shutil.copytree(bundle_factory("text-classification"), dst)
        return dst

    b = copy()
    data = bytearray((b / "model.int8.onnx").read_bytes())
    data[-10] ^= 0xFF
    (b / "model.int8.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.int8.onnx: sha256 does not match"):
        load(b)
    b = copy()
    (b / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json: missing"):
        load(b)
    b = copy()
    m = json.loads((b / "manifest.json").read_text())
    (b / "manifest.json").write_text(json.dumps({**m, "schema_version": 99}))
    with pytest.raises(BundleError, match="manifest.json does not match manifest.json.sha256"):
        load(b)  # an edited manifest is caught by its digest ...
    rewrite_manifest(b, {**m, "schema_version": 99})
    with pytest.raises(BundleError, match="unknown schema_version 99"):
        load(b)  # ... and, digest rewritten too, by what it says
    (b / "manifest.json.sha256").unlink()
    with pytest.raises(BundleError, match="manifest.json.sha256 is missing"):
        load(b)
    with pytest.raises(BundleError, match="bundle folder not found"):
        load(tmp_path / "missing")
    with pytest.raises(BundleError, match="holds no fp16 model"):
        load(bundle_factory("text-classification"), precision="fp16")
