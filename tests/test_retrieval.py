"""BGE-M3's three outputs from one graph: the export of a checkpoint with sparse_linear.pt and
colbert_linear.pt, the runtime's answers against FlagEmbedding's BGEM3FlagModel on the same
checkpoint (dense, lexical weights, ColBERT vectors, compute_score), and the HTTP routes that
serve them (/embed_sparse, /predict's return_* flags, /embed_all's multi-vectors)."""
from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import pytest

from tests.bundles import M3
from tests.conftest import needs_bundles, needs_torch
from tests.test_clients import http

TEXTS = ["What is BGE M3?", "Definition of BM25", "Москва — столица России.",
         "東京は日本の首都です。東京 東京", "BM25 is a bag-of-words retrieval function."]
# pairs that share tokens (a non-zero lexical score) and pairs that do not
PAIRS = [(TEXTS[0], TEXTS[1]), (TEXTS[1], TEXTS[4]), (TEXTS[3], "東京 東京"),
         (TEXTS[2], TEXTS[0])]


@pytest.fixture(scope="module")
def m3(bundle_factory):
    return bundle_factory("feature-extraction", **M3)


@pytest.fixture(scope="module")
def reference(model_factory):
    """FlagEmbedding's BGEM3FlagModel on the bundle's checkpoint, fp32 on the CPU."""
    flag = pytest.importorskip("FlagEmbedding")
    return flag.BGEM3FlagModel(str(model_factory("feature-extraction", **M3)), use_fp16=False,
                               devices="cpu")


def load(folder, precision):
    from xlmr_serverless.runtime import load as load_bundle

    return load_bundle(folder, precision=precision)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@needs_torch
def test_fp32_equals_flagembedding(m3, reference):
    """Dense vectors, lexical weights (the same token ids, as strings) and ColBERT vectors
    ([tokens - 1, dim] each) within 1e-4 of BGEM3FlagModel.encode; a single text unwrapped
    as FlagEmbedding unwraps it."""
    pipe = load(m3, "fp32")
    flags = {"return_dense": True, "return_sparse": True, "return_colbert_vecs": True}
    theirs, ours = reference.encode(TEXTS, **flags), pipe.encode(TEXTS, **flags)
    assert set(ours) == set(theirs)
    assert ours["dense_vecs"].shape == theirs["dense_vecs"].shape
    assert np.abs(ours["dense_vecs"] - theirs["dense_vecs"]).max() < 1e-4
    for a, b in zip(ours["lexical_weights"], theirs["lexical_weights"]):
        assert set(a) == set(b)
        assert max((abs(a[k] - float(b[k])) for k in b), default=0.0) < 1e-4
    assert sum(bool(w) for w in ours["lexical_weights"]) >= 3  # weights to compare
    for a, b in zip(ours["colbert_vecs"], theirs["colbert_vecs"]):
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-4
    one, ref_one = pipe.encode(TEXTS[0], **flags), reference.encode(TEXTS[0], **flags)
    assert one["dense_vecs"].shape == ref_one["dense_vecs"].shape
    assert set(one["lexical_weights"]) == set(ref_one["lexical_weights"])
    only = pipe.encode(TEXTS, return_dense=False, return_sparse=True)
    assert only["dense_vecs"] is None and only["colbert_vecs"] is None
    assert only["lexical_weights"] == ours["lexical_weights"]


@needs_torch
def test_compute_score_equals_flagembedding(m3, reference):
    """compute_score's five scores per pair, weighted or not, and for one pair."""
    pipe = load(m3, "fp32")
    for weights in (None, [0.4, 0.2, 0.4]):
        theirs = reference.compute_score(PAIRS, weights_for_different_modes=weights)
        ours = pipe.compute_score(PAIRS, weights_for_different_modes=weights)
        assert list(ours) == list(theirs)
        for key in theirs:
            assert np.abs(np.array(ours[key]) - np.array(theirs[key])).max() < 1e-4, key
    assert any(s > 0 for s in ours["sparse"]) and 0.0 in ours["sparse"]
    one = pipe.compute_score(PAIRS[1])
    assert one["sparse"] == pytest.approx(reference.compute_score(PAIRS[1])["sparse"], abs=1e-4)
    assert isinstance(one["colbert"], float)
    with pytest.raises(Exception, match="3 weights"):
        pipe.compute_score(PAIRS, weights_for_different_modes=[1.0, 1.0])


@needs_torch
def test_int8_within_the_gates_rule(m3, reference):
    """The int8 file against FlagEmbedding's fp32: dense and every ColBERT vector at cosine
    >= 0.99, and the top lexical weights the same tokens (the gate's measures)."""
    from xlmr_serverless.export.validate import SPARSE_TOP

    pipe = load(m3, "int8")
    flags = {"return_dense": True, "return_sparse": True, "return_colbert_vecs": True}
    theirs, ours = reference.encode(TEXTS, **flags), pipe.encode(TEXTS, **flags)
    assert cosines(ours["dense_vecs"], theirs["dense_vecs"]).min() >= 0.99
    for a, b in zip(ours["colbert_vecs"], theirs["colbert_vecs"]):
        assert cosines(a, b).min() >= 0.99
    for a, b in zip(ours["lexical_weights"], theirs["lexical_weights"]):
        top = sorted(b, key=lambda k: -b[k])[:SPARSE_TOP]
        assert len(set(top) & set(a)) >= 0.9 * len(top)


@needs_torch
def test_export_records_the_heads(m3):
    """--task auto on BGE-M3's structure: feature-extraction with both heads in one graph,
    the manifest listing them and the gate judging each by its own measure."""
    manifest = json.loads((m3 / "manifest.json").read_text())
    assert manifest["task"] == "feature-extraction"
    assert manifest["outputs"] == ["last_hidden_state", "token_weights", "colbert_vecs"]
    assert manifest["sentence_embedding"]["pooling"] == "cls"
    assert manifest["sentence_embedding"]["normalize"] is True
    parts = manifest["parity"]["int8"]["outputs"]
    assert set(parts) == {"token_weights", "colbert_vecs"}
    assert "topk_overlap" in parts["token_weights"] and "cosine_min" in parts["colbert_vecs"]


@needs_torch
def test_heads_are_checked_at_export(model_factory, tmp_path):
    """A head file that is not a Linear layer's weights, or one for another hidden size, is
    a clear ExportError; a vocabulary trim (it renumbers the ids lexical weights are keyed
    by) is refused; --task auto finds both heads; one head alone exports alone."""
    import shutil

    import torch

    from tests.factory import make_model
    from xlmr_serverless.export.build import ExportOptions, build_bundle
    from xlmr_serverless.export.errors import ExportError

    src = model_factory("feature-extraction", **M3)
    ck = tmp_path / "ck"
    shutil.copytree(src, ck)
    torch.save({"w": torch.zeros(1, 32)}, ck / "sparse_linear.pt")
    with pytest.raises(ExportError, match="not a Linear layer"):
        build_bundle(ck, "auto", tmp_path / "a", ExportOptions(precisions=("fp32",)))
    torch.save(torch.nn.Linear(16, 1).state_dict(), ck / "sparse_linear.pt")
    with pytest.raises(ExportError, match="hidden size is 32"):
        build_bundle(ck, "auto", tmp_path / "b", ExportOptions(precisions=("fp32",)))
    with pytest.raises(ExportError, match="vocabulary trim"):
        build_bundle(src, "auto", tmp_path / "c", ExportOptions(
            precisions=("fp32",), trim_languages=("en",)))
    one = make_model(tmp_path / "one", "feature-extraction", heads="colbert")
    manifest = build_bundle(one, "auto", tmp_path / "d", ExportOptions(precisions=("fp32",)))
    assert manifest.outputs == ("last_hidden_state", "colbert_vecs")
    pipe = load(tmp_path / "d", "fp32")
    assert pipe.heads == ("colbert_vecs",)
    with pytest.raises(Exception, match="return_sparse: this bundle has no such head"):
        pipe.encode(TEXTS, return_sparse=True)


def test_export_heads_are_the_specs():
    """Every extra head a task spec names has a loader in export (and no other)."""
    pytest.importorskip("torch")
    from xlmr_serverless.export.models import HEADS
    from xlmr_serverless.runtime.tasks import specs

    assert set(HEADS) == {h.name for s in specs().values() for h in s.heads}


# -- HTTP -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def servers(bundle_factory):
    """A live `xlmr serve` on the M3 bundle and one on a plain embedding bundle."""
    from xlmr_serverless.aws_lambda.local import http_server

    live = {name: http_server(folder, "127.0.0.1", 0) for name, folder in (
        ("m3", bundle_factory("feature-extraction", **M3)),
        ("plain", bundle_factory("feature-extraction")))}
    for srv in live.values():
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield {name: f"http://127.0.0.1:{srv.server_port}" for name, srv in live.items()}
    for srv in live.values():
        srv.shutdown()
        srv.server_close()


def close(a: Any, b: Any, atol: float = 1e-6) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) or bool(
        np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), atol=atol))


@needs_bundles
@pytest.mark.serving
def test_http_embed_sparse(servers, m3):
    """TEI's /embed_sparse: [{"index", "value"}] by index, the runtime's lexical weights;
    a bundle without a sparse head answers TEI's 424 (error_type backend)."""
    pipe = load(m3, None)
    status, _, got = http(servers["m3"] + "/embed_sparse", "POST", {"inputs": TEXTS[:2]})
    assert status == 200
    lexical = pipe.encode(TEXTS[:2], return_dense=False, return_sparse=True)["lexical_weights"]
    for entries, weights in zip(got, lexical):
        assert [e["index"] for e in entries] == sorted(int(k) for k in weights)
        assert all(abs(e["value"] - weights[str(e["index"])]) < 1e-6 for e in entries)
    status, _, got = http(servers["m3"] + "/embed_sparse", "POST", {"inputs": TEXTS[0]})
    assert status == 200 and len(got) == 1
    status, _, body = http(servers["plain"] + "/embed_sparse", "POST", {"inputs": "hello"})
    assert (status, body["error_type"]) == (424, "backend") and "token_weights head" in body["error"]
    status, _, body = http(servers["m3"] + "/embed_sparse", "POST", {"inputs": "word " * 600})
    assert (status, body["error_type"]) == (413, "validation")
    status, _, body = http(servers["m3"] + "/embed_sparse", "POST", {"inputs": [], "x": 1})
    assert status == 422


@needs_bundles
@pytest.mark.serving
def test_http_predict_returns_flagembedding_keys(servers, m3):
    """/predict with parameters.return_dense / return_sparse / return_colbert_vecs answers
    FlagEmbedding's keys (null where not asked) with the runtime's values; asking a head
    the bundle lacks, or nothing, is a 422."""
    pipe = load(m3, None)
    params = {"return_dense": True, "return_sparse": True, "return_colbert_vecs": True}
    status, _, got = http(servers["m3"] + "/predict", "POST",
                          {"inputs": TEXTS[:2], "parameters": params})
    assert status == 200 and set(got) == {"dense_vecs", "lexical_weights", "colbert_vecs"}
    expect = pipe.encode(TEXTS[:2], **params)
    assert close(got["dense_vecs"], expect["dense_vecs"].tolist())
    assert got["lexical_weights"] == [{k: pytest.approx(v) for k, v in w.items()}
                                      for w in expect["lexical_weights"]]
    for a, b in zip(got["colbert_vecs"], expect["colbert_vecs"]):
        assert close(a, b.tolist())
    status, _, got = http(servers["m3"] + "/predict", "POST",
                          {"inputs": TEXTS[0], "parameters": {"return_sparse": True}})
    assert status == 200 and got["dense_vecs"] is None and isinstance(got["lexical_weights"], dict)
    for server, parameters in (("plain", {"return_sparse": True}),
                               ("m3", {"return_dense": False}),
                               ("m3", {"return_sparse": "yes"})):
        status, _, body = http(servers[server] + "/predict", "POST",
                               {"inputs": "hello", "parameters": parameters})
        assert status == 422, (server, parameters, body)


@needs_bundles
@pytest.mark.serving
def test_http_embed_all_gives_colbert_vectors(servers, m3):
    """/embed_all on a bundle with a ColBERT head: its multi-vectors, [tokens - 1, dim] per
    text, normalised; the budget counts them before the model runs."""
    pipe = load(m3, None)
    status, _, got = http(servers["m3"] + "/embed_all", "POST", {"inputs": TEXTS[:2]})
    assert status == 200
    for text, vectors in zip(TEXTS[:2], got):
        assert len(vectors) == len(pipe.tokenizer.encode([text])[0].ids) - 1
        assert np.allclose(np.linalg.norm(vectors, axis=-1), 1.0, atol=1e-5)
    status, _, body = http(servers["m3"] + "/embed_all", "POST",
                           {"inputs": ["word " * 600] * 64, "truncate": True})
    assert status == 413


@needs_bundles
@pytest.mark.serving
def test_colbert_answers_are_counted(m3):
    """The response-size estimate knows a ColBERT answer is tokens x dim floats: a budget
    that fits the dense answer refuses the multi-vector one before the model runs."""
    from xlmr_serverless.runtime import Budget, OverBudgetError
    from xlmr_serverless.runtime import load as load_bundle

    texts = ["word " * 100] * 4
    dense = load_bundle(m3, budget=Budget(max_response_bytes=10_000))
    dense.encode(texts)
    with pytest.raises(OverBudgetError):
        dense.encode(texts, return_colbert_vecs=True)
    with pytest.raises(OverBudgetError):
        dense.encode(texts, return_dense=False, return_sparse=True)


# -- SPLADE from a masked-LM checkpoint ------------------------------------------------------

@pytest.fixture(scope="module")
def splade(model_factory, tmp_path_factory):
    """A tiny masked-LM checkpoint saved as sentence-transformers saves a SPLADE
    SparseEncoder (modules.json, 1_SpladePooling), and that SparseEncoder."""
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    encoder = st.SparseEncoder(modules=[
        MLMTransformer(str(model_factory("fill-mask"))), SpladePooling("max")], device="cpu")
    folder = tmp_path_factory.mktemp("splade") / "checkpoint"
    encoder.save(str(folder))
    return folder, encoder


@needs_torch
def test_splade_equals_sparse_encoder(splade, tmp_path):
    """--task auto on a SPLADE SparseEncoder checkpoint: sparse-embedding, whose fp32 weights
    equal SparseEncoder.encode's within 1e-4 (every vocabulary piece), whose /embed_sparse
    entries are its non-zero ones, and whose max_active_dims keeps the same top weights."""
    from xlmr_serverless.export.build import ExportOptions, build_bundle

    folder, encoder = splade
    manifest = build_bundle(folder, "auto", tmp_path / "b", ExportOptions(
        precisions=("fp32", "int8"), min_agreement=0.0))
    assert manifest.task == "sparse-embedding" and manifest.outputs == ("sparse_embedding",)
    assert "topk_overlap" in manifest.parity["int8"]
    pipe = load(tmp_path / "b", "fp32")
    theirs = encoder.encode(TEXTS, convert_to_tensor=True).to_dense().numpy()
    ours = pipe.encode(TEXTS)
    assert ours.shape == theirs.shape and np.abs(ours - theirs).max() < 1e-4
    for entries, row, ref in zip(pipe.embed_sparse(TEXTS), ours, theirs):
        idx = [e["index"] for e in entries]
        assert idx == np.flatnonzero(row).tolist() and idx
        assert np.abs(np.array([e["value"] for e in entries]) - ref[idx]).max() < 1e-4
        assert set(np.flatnonzero(ref > 1e-4).tolist()) <= set(idx)
    capped = encoder.encode(TEXTS[:2], convert_to_tensor=True, max_active_dims=5).to_dense().numpy()
    for entries, row in zip(pipe(TEXTS[:2], max_active_dims=5), capped):
        assert sorted(e["index"] for e in entries) == np.flatnonzero(row).tolist()


@needs_torch
def test_splade_pooling_variants_are_refused(splade, tmp_path):
    """A SparseEncoder pooling the graph does not compute (sum, or log1p_relu) is refused at
    export rather than served with other values."""
    import shutil

    from xlmr_serverless.export.build import ExportOptions, build_bundle
    from xlmr_serverless.export.errors import ExportError

    folder = tmp_path / "ck"
    shutil.copytree(splade[0], folder)
    cfg = next(folder.glob("*SpladePooling/config.json"))
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "pooling_strategy": "sum"}))
    with pytest.raises(ExportError, match="SpladePooling sum"):
        build_bundle(folder, "auto", tmp_path / "b", ExportOptions(precisions=("fp32",)))


@needs_bundles
@pytest.mark.serving
def test_http_embed_sparse_splade(bundle_factory):
    """/embed_sparse and /predict on a SPLADE bundle (its natural route, as TEI's); the
    vocabulary scores every token makes are counted before the model runs, and the answer's
    entries before they are made."""
    from xlmr_serverless.aws_lambda.local import http_server
    from xlmr_serverless.runtime import Budget, OverBudgetError
    from xlmr_serverless.runtime import load as load_bundle

    folder = bundle_factory("sparse-embedding")
    pipe = load_bundle(folder)
    srv = http_server(folder, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_port}"
    try:
        status, _, got = http(url + "/embed_sparse", "POST", {"inputs": TEXTS[:2]})
        assert status == 200 and got == json.loads(json.dumps(pipe.embed_sparse(TEXTS[:2])))
        assert all([e["index"] for e in g] == sorted(e["index"] for e in g) for g in got)
        status, _, again = http(url + "/invocations", "POST", {"inputs": TEXTS[:2]})
        assert status == 200 and again == got
        status, _, one = http(url + "/predict", "POST", {"inputs": TEXTS[0],
                                                         "parameters": {"max_active_dims": 3}})
        assert status == 200 and len(one) <= 3
        status, _, body = http(url + "/embed_sparse", "POST",
                               {"inputs": "a", "prompt_name": "query"})
        assert status == 422
    finally:
        srv.shutdown()
        srv.server_close()
    vocab = pipe.bundle.output_width
    tight = load_bundle(folder, budget=Budget(max_output_values=vocab * 20))
    with pytest.raises(OverBudgetError):
        tight.embed_sparse(["word " * 30])
    small = load_bundle(folder, budget=Budget(max_response_bytes=500))
    with pytest.raises(OverBudgetError):
        small.embed_sparse(TEXTS)
    assert len(small(TEXTS[0], max_active_dims=2)) <= 2
