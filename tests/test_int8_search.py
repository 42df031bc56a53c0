"""The int8 gate's search, piece by piece: calibration text held apart from what the gate
judges, smoothing that computes the same fp32 function with flatter inputs (folded into a
LayerNorm or one Mul), the sensitivity pass's prefix search, and the gate stopping at the
default recipe when it passes, and per-token scales that free a text from its batchmates.
The real-weights cases (MiniLM: per-token scales; mixed precision chosen by speed) are
tests/test_convert.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")  # the export side's: the serving tier skips this file
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from tests.conftest import needs_torch  # noqa: E402
from xlmr_serverless.export import calibration, sensitivity, smoothing, validate  # noqa: E402

ACCURACY_TEXT = Path(__file__).resolve().parents[1] / "benchmarks" / "texts" / "accuracy.txt"


def test_calibration_text_is_never_judged(tmp_path):
    built_in = calibration.split_texts(None)
    assert built_in.judged == list(validate.DEFAULT_TEXTS)
    assert not set(built_in.judged) & set(built_in.calibration)
    assert "none of them calibrated on" in built_in.note
    # the benchmarks' held-out accuracy text is in neither
    held_out = set(ACCURACY_TEXT.read_text(encoding="utf-8").splitlines())
    assert len(held_out) >= 40 and not held_out & (set(built_in.judged) | set(built_in.calibration))

    lines = [f"line {i}" for i in range(10)] + ["line 0"]  # a repeated line stays out of both
    (tmp_path / "v.txt").write_text("\n".join(lines), encoding="utf-8")
    split = calibration.split_texts(tmp_path / "v.txt")
    assert split.calibration == ["line 0", "line 3", "line 6", "line 9"]
    assert split.judged == ["line 1", "line 2", "line 4", "line 5", "line 7", "line 8"]
    (tmp_path / "short.txt").write_text("one\ntwo\nthree", encoding="utf-8")
    short = calibration.split_texts(tmp_path / "short.txt")
    assert short.judged == ["one", "two", "three"]
    assert short.calibration == list(calibration.CALIBRATION_TEXTS)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 80), data=st.data())
def test_shortest_passing_prefix(n, data):
    """Monotone 'passes from t on': the search returns t (None when nothing passes) in about
    two logarithms of n trials, never judging a prefix longer than n."""
    t = data.draw(st.one_of(st.none(), st.integers(1, max(n, 1))))
    calls = []

    def passes(k: int) -> bool:
        assert 1 <= k <= n
        calls.append(k)
        return t is not None and k >= t

    found = sensitivity.shortest_passing(n, passes)
    assert found == (t if t is not None and t <= n else None)
    assert len(calls) <= 2 * np.log(max(n, 2)) / np.log(1.5) + 3
    assert list(sensitivity.ladder(n))[-1:] == ([n] if n else [])


def test_ranking_puts_the_largest_cut_first():
    cuts = {"a": 0.01, "b": 0.2, "c": 0.0, "d": -0.003, "e": 0.05}

    def error_without(excluded: list[str]) -> float:
        return 0.5 - sum(cuts[n] for n in excluded)

    ranking = sensitivity.rank(list(cuts), error_without)
    assert ranking.all_int8_error == 0.5
    assert ranking.worst() == ["b", "e", "a"]  # nodes whose fp32 copy does not help: never kept
    assert ranking.as_dict()["largest_cuts"][0] == {"node": "b", "error_cut": 0.2}


def _norm_then_matmuls(tmp_path: Path, shared: bool) -> Path:
    """x -> LayerNormalization -> two MatMuls (and, if `shared`, the residual Add reading the
    normalized tensor too), weights external as the export writes them."""
    rng = np.random.default_rng(0)
    hidden, out = 16, 8
    gamma = np.ones(hidden, np.float32)
    gamma[[2, 11]] = 60.0  # two outlier channels, as trained XLM-R's LayerNorms make them
    inits = [numpy_helper.from_array(gamma, "gamma"),
             numpy_helper.from_array(rng.normal(size=hidden).astype(np.float32), "beta"),
             numpy_helper.from_array(rng.normal(size=(hidden, out)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(hidden, out)).astype(np.float32), "w2")]
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["h"], name="ln",
                              axis=-1),
             helper.make_node("MatMul", ["h", "w1"], ["y1"], name="mm1"),
             helper.make_node("MatMul", ["h", "w2"], ["y2"], name="mm2")]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y1", "y2")]
    if shared:
        nodes.append(helper.make_node("Add", ["h", "x"], ["r"], name="residual"))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["b", "s", hidden])], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="model.onnx.data",
                    size_threshold=0)
    return path


@pytest.mark.parametrize("shared", [False, True], ids=["folded", "one-mul"])
def test_smoothing_keeps_the_function_and_flattens_the_input(tmp_path, shared):
    import onnxruntime as ort

    src = _norm_then_matmuls(tmp_path, shared)
    x = np.random.default_rng(1).normal(size=(3, 5, 16)).astype(np.float32)
    sites = smoothing.sites(onnx.load(str(src), load_external_data=False), "norm")
    assert [(s.tensor, s.nodes, s.norm) for s in sites] == [("h", ("mm1", "mm2"), "ln")]
    ranges = calibration.channel_absmax(src, [{"x": x}], ["h"])
    assert ranges["h"].shape == (16,) and ranges["h"][[2, 11]].min() > 10 * np.median(ranges["h"])

    dst = tmp_path / "smoothed.onnx"
    record = smoothing.smooth(src, dst, sites, ranges)
    assert record[0]["divided_in"] == ("Mul" if shared else "ln (folded)")
    before, after = record[0]["peak_over_median"]
    assert after < before / 3  # the outlier channels no longer set the range
    ops = [n.op_type for n in onnx.load(str(dst), load_external_data=False).graph.node]
    assert ops.count("Mul") == (1 if shared else 0)
    want = ort.InferenceSession(str(src)).run(None, {"x": x})
    got = ort.InferenceSession(str(dst)).run(None, {"x": x})
    for w, g in zip(want, got):  # the same fp32 function (the residual reads h unscaled)
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * np.abs(w).max())
    assert not list(tmp_path.glob("*.smoothed.data"))  # the staging file is gone


def test_scales_leave_dead_channels_alone():
    s = smoothing.scales(np.array([4.0, 0.0, 1.0]), np.array([1.0, 2.0, 0.0]))
    assert s[0] == pytest.approx(2.0) and s[1] == 1.0 and s[2] == 1.0


@needs_torch
@pytest.mark.main_env_only
def test_the_gate_stops_at_the_default_recipe_when_it_passes(bundle_factory):
    """Random weights: all int8 passes, so nothing else is written or timed."""
    import json

    manifest = json.loads((bundle_factory("text-classification") / "manifest.json").read_text())
    tried = manifest["parity"]["int8_recipes_tried"]
    assert [t["recipe"] for t in tried] == ["default"] and "ms" not in tried[0]
    gate = manifest["parity"]["int8_gate"]
    assert "default recipe (all int8) passed" in gate["chosen_by"]
    assert "sensitivity" not in gate and "smoothing" not in gate
    assert "none of them calibrated on" in gate["calibration"]


def test_nodes_set_apart_as_nbits8(tmp_path):
    """A recipe's set-apart MatMuls written as 8-bit MatMulNBits (int8 activations scaled per
    block of K) while the rest is dynamic int8: with two outlier input channels, the
    MatMulNBits product stays far closer to fp32 than the per-tensor int8 one."""
    import onnxruntime as ort

    from xlmr_serverless.export import quantize

    rng = np.random.default_rng(0)
    hidden, out = 64, 32
    outliers = [3, 5]  # in one block of 32; the weights reading them as much smaller, as
    weights = rng.normal(size=(hidden, out)).astype(np.float32)  # trained models carry them
    weights[outliers] /= 80.0
    inits = [numpy_helper.from_array(weights, w) for w in ("w1", "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["y1"], name="mm1"),
             helper.make_node("MatMul", ["x", "w2"], ["y2"], name="mm2")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", hidden])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y1", "y2")], inits)
    src = tmp_path / "model.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                    str(src), save_as_external_data=True, location="model.onnx.data",
                    size_threshold=0)
    dst = tmp_path / "q.onnx"
    recipe = quantize.Int8Recipe("t", fp32_nodes=("mm1",), apart_as="nbits8")
    kept, _, _ = quantize.quantize_int8(src, dst, recipe, True, hidden, 4 * hidden, tables=False)
    assert kept == ["mm1"]
    ops = [n.op_type for n in onnx.load(str(dst)).graph.node]
    assert ops.count("MatMulNBits") == 1 and "MatMul" not in ops
    x = rng.normal(size=(2, 8, hidden)).astype(np.float32)
    x[..., outliers] *= 80.0
    w1, w2 = (numpy_helper.to_array(i) for i in inits)
    y1, y2 = ort.InferenceSession(str(dst)).run(None, {"x": x})

    def error(got: np.ndarray, want: np.ndarray) -> float:
        return float(np.linalg.norm(got - want) / np.linalg.norm(want))

    assert error(y1, x @ w1) < error(y2, x @ w2) / 2
    assert not list(tmp_path.glob("*.nbits8.onnx*"))  # the staged file is gone


def _encoder_ffn(tmp_path: Path) -> Path:
    """input_ids/attention_mask -> embedding Gather -> LayerNormalization -> FFN (MatMul,
    Gelu, MatMul): the shape export/per_token.py rewrites, weights external."""
    rng = np.random.default_rng(0)
    vocab, hidden, inner = 50, 32, 128
    table = rng.normal(size=(vocab, hidden)).astype(np.float32)
    table[7] *= 40.0  # a token whose activations outrange every other's, as <s> does
    inits = [numpy_helper.from_array(table, "table"),
             numpy_helper.from_array(np.ones(hidden, np.float32), "gamma"),
             numpy_helper.from_array(np.zeros(hidden, np.float32), "beta"),
             numpy_helper.from_array(rng.normal(size=(hidden, inner)).astype(np.float32), "up"),
             numpy_helper.from_array(rng.normal(size=(inner, hidden)).astype(np.float32), "down")]
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["e"], name="embed"),
             helper.make_node("LayerNormalization", ["e", "gamma", "beta"], ["h"], name="ln",
                              axis=-1),
             helper.make_node("Mul", ["h", "e"], ["g"], name="keep_scale"),  # per-token range
             helper.make_node("MatMul", ["g", "up"], ["u"], name="up_proj"),
             helper.make_node("Gelu", ["u"], ["a"], name="gelu", domain="com.microsoft"),
             helper.make_node("MatMul", ["a", "down"], ["y"], name="down_proj")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "s"])
                     for n in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    path = tmp_path / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="model.onnx.data",
                    size_threshold=0)
    return path


def test_per_token_int8_keeps_the_function_and_frees_a_text_from_its_batchmates(tmp_path):
    """The FFN written as per-token int8 (a scale per row, after GELU a zero point that keeps
    its negative values) answers as fp32 does within int8's error on real tokens, a row of
    padding included (zeros, not NaN), and a short text's answer no longer moves when a
    batchmate carries the outlier token, where per-tensor dynamic int8's does."""
    import onnxruntime as ort

    from xlmr_serverless.export import per_token, quantize

    src = _encoder_ffn(tmp_path)
    nodes = per_token.matmuls(onnx.load(str(src), load_external_data=False), "ffn", 32, 128)
    assert nodes == ["up_proj", "down_proj"]

    def int8(name: str, recipe: quantize.Int8Recipe) -> ort.InferenceSession:
        out = tmp_path / f"{name}.int8.onnx"
        quantize.quantize_int8(src, out, recipe, True, 32, 128, tables=False)
        return ort.InferenceSession(str(out))

    per_tensor = int8("plain", quantize.Int8Recipe("t", per_channel=True))
    per_row = int8("rows", quantize.Int8Recipe("t", per_channel=True, per_token="ffn"))
    proto = onnx.load(str(tmp_path / "rows.int8.onnx"), load_external_data=False)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("MatMulIntegerToFloat") == 2 and "MatMul" not in ops
    assert ops.count("QuantizeLinear") == 2 and "DynamicQuantizeLinear" not in ops
    assert ops.count("Abs") == 1  # after Gelu the peak is the largest value: no Abs pass
    assert "Cast" in ops  # padding zeroed from the mask
    assert {o.domain: o.version for o in proto.opset_import}[""] == per_token.OPSET
    assert not list(tmp_path.glob("*.per_token.*"))  # the staged weights are gone

    ids = np.array([[3, 4, 5, 6, 0, 0], [7, 8, 9, 10, 11, 12], [0, 0, 0, 0, 0, 0]])
    mask = np.array([[1, 1, 1, 1, 0, 0], [1] * 6, [0] * 6])
    feed = {"input_ids": ids, "attention_mask": mask}
    want = ort.InferenceSession(str(src)).run(None, feed)[0]
    got = per_row.run(None, feed)[0]
    assert np.isfinite(got).all() and not got[2].any()  # the padding row: zeros, not NaN
    real = mask.astype(bool)
    err = np.abs(got[real] - want[real]).max(axis=-1) / np.abs(want[real]).max(axis=-1)
    assert err.max() < 0.03, err  # every real token within int8's error of fp32

    def drift(sess: ort.InferenceSession) -> float:
        """How far the first text's answer moves when batched with the outlier text."""
        alone = sess.run(None, {"input_ids": ids[:1, :4], "attention_mask": mask[:1, :4]})[0]
        batched = sess.run(None, {"input_ids": ids[:2], "attention_mask": mask[:2]})[0]
        return float(np.abs(batched[0, :4] - alone[0]).max() / np.abs(alone[0]).max())

    plain, rows = drift(per_tensor), drift(per_row)
    assert plain > 0.05 and rows < plain / 10, (plain, rows)


@needs_torch
@pytest.mark.main_env_only
def test_a_failing_table_is_found_and_kept_fp32(tmp_path):
    """A word-embedding table whose few outlier rows (tokens no text here uses) set its int8
    scale leaves every other row a few levels: every all-int8 recipe fails, and no MatMul
    kept fp32 would help (they all keep the table int8). The gate tries the best of them with
    the table fp32, ships that, and never runs the sensitivity pass."""
    import json

    import torch
    import transformers

    from tests.factory import make_model
    from xlmr_serverless.export.build import ExportOptions, build_bundle

    folder = make_model(tmp_path / "model", "feature-extraction", hidden=32, layers=2)
    model = transformers.AutoModel.from_pretrained(str(folder))
    with torch.no_grad():
        model.embeddings.word_embeddings.weight[-8:] *= 300.0
    model.save_pretrained(str(folder))
    build_bundle(str(folder), "feature-extraction", tmp_path / "bundle",
                 ExportOptions(precisions=("fp32", "int8")), log=lambda _: None)
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    gate = manifest["parity"]["int8_gate"]
    tried = {r["recipe"]: r for r in manifest["parity"]["int8_recipes_tried"]}
    int8 = next(f for f in manifest["files"] if f["precision"] == "int8")
    assert int8["recipe"].endswith("+fp32_table") and "rejected" not in tried[int8["recipe"]]
    assert all("rejected" in r for name, r in tried.items() if name != int8["recipe"])
    assert "sensitivity" not in gate and "table kept fp32" in gate["chosen_by"]
    graph = onnx.load(str(tmp_path / "bundle" / "model.int8.onnx"), load_external_data=False)
    floats = {i.name for i in graph.graph.initializer if i.data_type == TensorProto.FLOAT}
    ops = {n.op_type for n in graph.graph.node}
    assert any(n.op_type == "Gather" and n.input[0] in floats for n in graph.graph.node)
    assert "DequantizeLinear" not in ops and {"MatMulInteger", "QAttention"} <= ops
    # served: every held-out sentence within 0.99 of fp32, in one padded batch
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tmp_path / "bundle" / "tokenizer.json"))
    tok.enable_padding(pad_id=manifest["special_tokens"]["pad"]["id"])
    rows = tok.encode_batch(ACCURACY_TEXT.read_text(encoding="utf-8").splitlines()[:16])
    feed = {"input_ids": np.array([r.ids for r in rows]),
            "attention_mask": np.array([r.attention_mask for r in rows])}

    def sentences(precision: str) -> np.ndarray:
        path = str(tmp_path / "bundle" / f"model.{precision}.onnx")
        hidden = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feed)[0]
        m = feed["attention_mask"][..., None]
        v = (hidden * m).sum(1) / m.sum(1)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    assert (sentences("fp32") * sentences("int8")).sum(1).min() >= 0.99
