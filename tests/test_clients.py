"""The endpoint as its clients see it: huggingface_hub's InferenceClient, the OpenAI Python
client and TEI-style requests, each talking real HTTP to `xlmr serve`'s server on loopback,
with answers equal to the runtime's; unknown routes and wrong methods answer 404 / 405."""
from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pytest

from tests.conftest import assert_same, needs_bundles

pytestmark = [needs_bundles, pytest.mark.serving]


@pytest.fixture(scope="module")
def server(bundle_factory):
    """task -> base URL of a live server for that task's bundle (started once per module)."""
    from xlmr_serverless.aws_lambda.local import http_server

    live: dict[str, Any] = {}

    def url(task: str) -> str:
        if task not in live:
            srv = http_server(bundle_factory(task), "127.0.0.1", 0)
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            live[task] = srv
        return f"http://127.0.0.1:{live[task].server_port}"

    yield url
    for srv in live.values():
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="module")
def pipes(bundle_factory):
    from xlmr_serverless.runtime import load

    cache: dict[str, Any] = {}
    return lambda task: cache.setdefault(task, load(bundle_factory(task)))


def http(url: str, method: str = "GET", body: Any = None) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, dict(res.headers), json.loads(res.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read() or b"null")


def close(a: Any, b: Any) -> None:
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) or \
        np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), atol=1e-6)


def test_inference_client_every_task(server, pipes):
    """Every InferenceClient method for a task we serve, through /predict, answers what the
    runtime answers (its HTTP shape: `pipe.serve`)."""
    hub = pytest.importorskip("huggingface_hub")

    def client(task: str) -> Any:
        return hub.InferenceClient(model=server(task) + "/predict")

    fm = client("fill-mask").fill_mask("Paris is the <mask> of France.", top_k=3)
    expect = pipes("fill-mask").serve("Paris is the <mask> of France.", top_k=3)
    assert [(x.token, x.token_str) for x in fm] == [(x["token"], x["token_str"]) for x in expect]

    tc = client("text-classification").text_classification("Berlin is lovely")
    expect = pipes("text-classification").serve("Berlin is lovely")[0]
    assert [x.label for x in tc] == [x["label"] for x in expect] and len(tc) == 3
    assert tc[0].score == pytest.approx(expect[0]["score"])
    top = client("text-classification").text_classification("Berlin is lovely", top_k=1)
    assert [x.label for x in top] == [expect[0]["label"]]

    ner = client("token-classification").token_classification(
        "My name is Wolfgang and I live in Berlin.", aggregation_strategy="simple")
    expect = pipes("token-classification").serve("My name is Wolfgang and I live in Berlin.",
                                                 aggregation_strategy="simple", ignore_labels=["O"])
    assert [(e.word, e.start, e.end) for e in ner] == [(e["word"], e["start"], e["end"])
                                                       for e in expect]

    qa = client("question-answering").question_answering(
        question="Where do I live?", context="My name is Wolfgang and I live in Berlin.")
    expect = pipes("question-answering").serve(
        {"question": "Where do I live?", "context": "My name is Wolfgang and I live in Berlin."})
    assert (qa.answer, qa.start, qa.end) == (expect["answer"], expect["start"], expect["end"])

    zs = client("zero-shot-classification").zero_shot_classification(
        "The new budget was approved by parliament.", ["politics", "sport", "music"])
    expect = pipes("zero-shot-classification")("The new budget was approved by parliament.",
                                               candidate_labels=["politics", "sport", "music"])
    assert [x.label for x in zs] == expect["labels"]
    assert [x.score for x in zs] == pytest.approx(expect["scores"])

    fe = client("feature-extraction")
    vec = fe.feature_extraction("héllo wörld")
    assert np.allclose(vec, pipes("feature-extraction")("héllo wörld"), atol=1e-6)
    sims = fe.sentence_similarity("Machine learning is easy.",
                                  ["Deep learning is simple.", "I like trains."])
    emb = pipes("feature-extraction").embed(["Machine learning is easy.",
                                             "Deep learning is simple.", "I like trains."],
                                            normalize=True)
    assert sims == pytest.approx([float(emb[1] @ emb[0]), float(emb[2] @ emb[0])], abs=1e-5)


def test_tei_similarity_through_the_inference_client(server, pipes):
    """TEI's /similarity, called by huggingface_hub's InferenceClient pointed at it: the cosine
    of each sentence with the source, as /predict's sentence similarity and the embeddings
    give it; TEI's statuses for an empty list and an over-large batch."""
    hub = pytest.importorskip("huggingface_hub")
    url = server("feature-extraction")
    source, sentences = "Machine learning is easy.", ["Deep learning is simple.", "I like trains."]
    sims = hub.InferenceClient(model=url + "/similarity").sentence_similarity(source, sentences)
    emb = pipes("feature-extraction").embed([source, *sentences], normalize=True)
    assert sims == pytest.approx([float(emb[1] @ emb[0]), float(emb[2] @ emb[0])], abs=1e-5)
    status, _, left = http(url + "/similarity", "POST", {
        "inputs": {"source_sentence": "word " * 600, "sentences": ["word " * 600]},
        "parameters": {"truncate": True, "truncation_direction": "Left"}})
    assert status == 200 and left == pytest.approx([1.0], abs=1e-5)
    status, _, body = http(url + "/similarity", "POST",
                           {"inputs": {"source_sentence": "a", "sentences": []}})
    assert (status, body["error_type"]) == (400, "empty")
    status, _, body = http(url + "/similarity", "POST",
                           {"inputs": {"source_sentence": "a", "sentences": ["b"] * 64}})
    assert (status, body["error_type"]) == (413, "validation")  # 65 texts with the source
    status, _, body = http(server("text-classification") + "/similarity", "POST",
                           {"inputs": {"source_sentence": "a", "sentences": ["b"]}})
    assert (status, body["error_type"]) == (424, "backend") and "feature-extraction" in body["error"]


def test_tei_response_headers(server, pipes):
    """TEI's x-compute-* headers on an answer the model computed: the characters and tokens it
    read (as the pipeline counts them), and whole milliseconds, none longer than the whole."""
    url, pipe = server("feature-extraction"), pipes("feature-extraction")
    texts = ["hello world", "bonjour le monde, ça va ?"]
    status, headers, _ = http(url + "/embed", "POST", {"inputs": texts})
    h = {k.lower(): v for k, v in headers.items()}
    assert status == 200 and h["x-compute-type"] == "cpu" and h["x-queue-time"] == "0"
    assert int(h["x-compute-tokens"]) == sum(pipe.count_tokens(texts))
    assert int(h["x-compute-characters"]) == sum(len(t) for t in texts)
    total = int(h["x-total-time"])
    assert h["x-compute-time"] == h["x-total-time"]
    assert 0 <= int(h["x-inference-time"]) <= total and 0 <= int(h["x-tokenization-time"]) <= total
    status, headers, _ = http(url + "/health")
    assert status == 200 and "x-compute-tokens" not in {k.lower() for k in headers}


def test_tei_embed_all(server, pipes):
    """TEI's /embed_all: every token's vector (specials included), the pipeline's token
    embeddings as they are; truncation as /embed has it; the budget counts tokens x hidden."""
    url, pipe = server("feature-extraction"), pipes("feature-extraction")
    texts = ["hello world", "bonjour"]
    status, _, got = http(url + "/embed_all", "POST", {"inputs": texts})
    assert status == 200 and len(got) == 2
    # (as one batch: int8 activations are quantized per batch)
    for text, vectors, expect in zip(texts, got, pipe(texts)):
        assert np.allclose(vectors, expect[0], atol=1e-6)
        assert len(vectors) == len(pipe.tokenizer.encode([text])[0].ids)
    status, _, body = http(url + "/embed_all", "POST", {"inputs": "word " * 600})
    assert (status, body["error_type"]) == (413, "validation")
    status, _, got = http(url + "/embed_all", "POST", {"inputs": "word " * 600, "truncate": True})
    assert status == 200 and len(got[0]) == pipe.manifest.max_length


def test_tei_dimensions_and_prompts(server, pipes):
    """TEI's `dimensions` on /embed (the first ones, normalised after) and `prompt_name` on
    /embed, /tokenize and /similarity: a bundle without prompts names none, a 422."""
    url, pipe = server("feature-extraction"), pipes("feature-extraction")
    status, _, vecs = http(url + "/embed", "POST", {"inputs": ["hello", "world"], "dimensions": 8})
    assert status == 200 and np.allclose(
        vecs, pipe.embed(["hello", "world"], normalize=True, dimensions=8), atol=1e-6)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    for path, body in (("/embed", {"inputs": "x", "prompt_name": "query"}),
                       ("/tokenize", {"inputs": "x", "prompt_name": "query"}),
                       ("/similarity", {"inputs": {"source_sentence": "a", "sentences": ["b"]},
                                        "parameters": {"prompt_name": "query"}})):
        status, _, body = http(url + path, "POST", body)
        assert status == 422 and "no prompts" in body["error"], (path, body)
    status, _, body = http(url + "/embed", "POST", {"inputs": "x", "dimensions": 10_000})
    assert status == 422 and "dimensions" in body["error"]


def test_sagemaker_contract(server, pipes):
    """SageMaker's container contract: GET /ping answers as /health, POST /invocations as the
    bundle's natural route (/embed for an embedding bundle, /predict for the others)."""
    fe, tc = server("feature-extraction"), server("text-classification")
    for url in (fe, tc):
        (status, _, ping), (_, _, health) = http(url + "/ping"), http(url + "/health")
        assert status == 200 and ping == health and ping["status"] == "ok"
    body = {"inputs": ["hello world", "bonjour"], "normalize": False}
    status, _, got = http(fe + "/invocations", "POST", body)
    assert status == 200 and got == http(fe + "/embed", "POST", body)[2]
    body = {"inputs": ["I love it"], "parameters": {"top_k": 2}}
    status, _, got = http(tc + "/invocations", "POST", body)
    assert status == 200 and got == http(tc + "/predict", "POST", body)[2]
    # the natural route's schema holds: /embed takes no `parameters`
    status, _, err = http(fe + "/invocations", "POST", {"inputs": "x", "parameters": {}})
    assert status == 422 and "parameters" in err["error"]
    status, _, err = http(fe + "/invocations", "POST", ["x"])
    assert status == 422


def test_openai_client_embeddings(server, pipes):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server("feature-extraction") + "/v1", api_key="unused",
                           max_retries=0)
    pipe = pipes("feature-extraction")
    texts = ["hello world", "bonjour le monde", "東京"]
    expect = pipe.embed(texts)
    for fmt in ("float", "base64"):
        res = client.embeddings.create(model="anything", input=texts, encoding_format=fmt)
        got = [d.embedding for d in res.data]
        if fmt == "base64":  # the client hands base64 back as it came
            got = [np.frombuffer(base64.b64decode(g), dtype="<f4") for g in got]
        assert np.allclose(np.asarray(got, dtype=np.float32), expect, atol=1e-6)
        assert [d.index for d in res.data] == [0, 1, 2]
    default = client.embeddings.create(model="x", input="hello world")  # base64 under the hood
    # (alone, not batched: int8 activations are quantized per batch)
    assert np.allclose(default.data[0].embedding, pipe.embed(["hello world"])[0], atol=1e-6)
    assert res.model == pipe.manifest.name and "/" not in res.model
    tokens = sum(pipe.count_tokens(texts))
    assert res.usage.prompt_tokens == res.usage.total_tokens == tokens
    dim = expect.shape[1]
    assert len(client.embeddings.create(model="x", input="a", dimensions=dim).data[0].embedding) \
        == dim
    # fewer dimensions (Matryoshka): the first ones, normalised after
    short = client.embeddings.create(model="x", input="a", dimensions=dim // 2).data[0].embedding
    assert len(short) == dim // 2
    assert np.allclose(short, pipe.embed(["a"], dimensions=dim // 2)[0], atol=1e-6)
    with pytest.raises(openai.UnprocessableEntityError, match=f"between 1 and {dim}"):
        client.embeddings.create(model="x", input="a", dimensions=dim + 1)


def test_tei_routes(server, pipes):
    fe, tc = server("feature-extraction"), server("text-classification")
    pipe = pipes("feature-extraction")
    status, _, body = http(fe + "/embed", "POST", {"inputs": ["a b c", "d"], "normalize": False})
    assert status == 200 and np.allclose(body, pipe.embed(["a b c", "d"], normalize=False),
                                         atol=1e-6)
    long = "word " * 600
    status, _, body = http(fe + "/embed", "POST", {"inputs": long})
    assert status == 413 and ("max_seq_length" in body["error"] or "positions" in body["error"])
    assert (body["type"], body["error_type"]) == ("input_too_long", "validation")  # TEI's class
    varied = " ".join(f"Paris{i} Berlin{i * 7}" for i in range(200))  # its start != its end
    for truncate in ({"truncate": True}, {"truncation": True}):
        status, _, right = http(fe + "/embed", "POST", {"inputs": varied, **truncate})
        assert status == 200
    status, _, left = http(fe + "/embed", "POST", {"inputs": varied, "truncate": True,
                                                   "truncation_direction": "Left"})
    assert status == 200 and not np.allclose(left, right)
    assert np.allclose(left, pipe.embed([varied], normalize=True, truncate=True, direction="left"),
                       atol=1e-6)
    assert np.allclose(right, pipe.embed([varied], normalize=True, truncate=True), atol=1e-6)
    status, _, toks = http(fe + "/tokenize", "POST", {"inputs": "Paris est belle"})
    enc = pipe.tokenizer.encode(["Paris est belle"])[0]
    assert status == 200 and [t["id"] for t in toks[0]] == enc.ids
    assert toks[0][0]["special"] and not toks[0][1]["special"]
    assert "Paris est belle"[toks[0][1]["start"]:toks[0][1]["stop"]].strip() == "Paris"
    # TEI's /decode: the ids /tokenize gave back to text, as the tokenizer itself decodes them
    status, _, texts = http(fe + "/decode", "POST", {"ids": enc.ids})
    assert status == 200 and texts == [pipe.tokenizer.backend.decode(enc.ids)] == ["Paris est belle"]
    both = [enc.ids, pipe.tokenizer.encode(["Berlin"])[0].ids]
    status, _, texts = http(fe + "/decode", "POST", {"ids": both, "skip_special_tokens": False})
    assert status == 200 and texts == [pipe.tokenizer.backend.decode(ids, skip_special_tokens=False)
                                       for ids in both]
    assert texts[1].startswith("<s>") and texts[1].endswith("</s>")
    status, _, body = http(fe + "/decode", "POST", {"ids": [5, 250_002]})
    assert status == 422 and "250002" in body["error"]
    status, _, info = http(fe + "/info")
    assert status == 200 and info["model_type"]["embedding"]["pooling"]
    assert info["max_input_length"] == pipe.manifest.max_length and "/" not in info["model_id"]
    status, _, ranked = http(tc + "/rerank", "POST", {"query": "capital of France",
                                                      "texts": ["Paris", "Berlin", "Rome"],
                                                      "raw_scores": True, "return_text": True})
    expect = pipes("text-classification").rerank("capital of France", ["Paris", "Berlin", "Rome"],
                                                 raw_scores=True, return_text=True)
    assert status == 200
    assert_same(ranked, expect, 1e-6)
    status, _, body = http(tc + "/predict", "POST", {"inputs": "I like it", "raw_scores": True})
    raw = pipes("text-classification").serve("I like it", function_to_apply="none")
    assert status == 200
    assert_same(body, raw, 1e-6)
    status, _, info = http(tc + "/info")
    assert set(info["model_type"]["classifier"]["id2label"].values()) == \
        {"negative", "neutral", "positive"}


def test_one_truncation_vocabulary(server):
    """TEI's `truncate` and HF's `parameters.truncation` ask the same of every task that can
    truncate; the error names the limit and where it comes from."""
    fm = server("fill-mask")
    long = "word " * 600 + "<mask>"
    status, _, body = http(fm + "/predict", "POST", {"inputs": long})
    assert status == 422 and "the model's 512 positions" in body["error"]
    for ask in ({"truncate": True}, {"parameters": {"truncation": True}},
                {"parameters": {"truncate": True}}):
        # (one mask: each would score the whole vocabulary)
        status, _, body = http(fm + "/predict", "POST", {"inputs": "<mask> " + "a " * 600, **ask})
        assert status == 200, (ask, body)
    status, _, body = http(server("token-classification") + "/predict", "POST",
                           {"inputs": "x", "truncate": True})
    assert status == 422 and "stride" in body["error"]


def test_unknown_routes_and_methods(server):
    url = server("feature-extraction")
    for method, path in (("GET", "/nope"), ("GET", "/"), ("POST", "/v2/anything")):
        status, _, body = http(url + path, method, {} if method == "POST" else None)
        assert status == 404 and body["type"] == "not_found", (method, path, body)
        assert body["error_type"] == "not_found" and path in body["error"]
    status, headers, body = http(url + "/predict")
    assert status == 405 and body["type"] == body["error_type"] == "method_not_allowed"
    status, _, body = http(url + "/embed")  # a TEI route: TEI's error class
    assert status == 405 and (body["type"], body["error_type"]) == ("method_not_allowed",
                                                                    "validation")
    status, _, body = http(url + "/v1/embeddings")  # an OpenAI route: OpenAI's body
    assert status == 405 and body["error"]["type"] == "method_not_allowed"
    assert "POST" in headers["Allow"]
    status, headers, _ = http(url + "/health", "POST", {})
    assert status == 405 and headers["Allow"].startswith("GET")
    status, headers, _ = http(url + "/embed", "OPTIONS")
    assert status == 204 and "POST" in headers["Allow"]


def test_no_local_paths_in_responses(server, bundle_factory):
    """/health, /info and /v1/embeddings name the model, never the export machine's folders."""
    url = server("feature-extraction")
    folder = str(bundle_factory("feature-extraction"))
    for path, method, body in (("/health", "GET", None), ("/info", "GET", None),
                               ("/v1/embeddings", "POST", {"input": "x"})):
        status, _, answer = http(url + path, method, body)
        text = json.dumps(answer)
        assert status == 200 and folder not in text and "/tmp" not in text, (path, answer)


def test_openapi_document_is_served_and_committed(server):
    from tests.conftest import ROOT
    from xlmr_serverless.aws_lambda.routes import ROUTES, openapi_document

    status, _, doc = http(server("feature-extraction") + "/openapi.json")
    assert status == 200 and doc == openapi_document("feature-extraction")
    assert doc["openapi"].startswith("3.1")
    assert {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops} == \
        {(r.method, r.path) for r in ROUTES}
    # the served document publishes the served task's parameters, as the pipeline checks them
    served = doc["components"]["schemas"]["Parameters"]
    assert served["additionalProperties"] is False and "pooling" in served["properties"]
    committed = json.loads((ROOT / "openapi.json").read_text())
    assert committed == openapi_document(), \
        "regenerate: python -m xlmr_serverless.aws_lambda.openapi > openapi.json"
    # the committed one: any task's, one schema per task of the registry
    from xlmr_serverless.runtime.tasks import names

    assert [s["title"] for s in committed["components"]["schemas"]["Parameters"]["anyOf"]] == \
        list(names())


def test_token_ids_in_place_of_texts(server, pipes):
    """TEI's Input and OpenAI's `input` take token ids: one input's ids, or a list mixing
    texts and ids; ids read as the text they decode to (specials left out), so the ids of a
    text, specials included, embed as the text does. Ids outside the vocabulary, negative or
    nested too deep are 422s; more ids than the budget's tokens a 413."""
    url, pipe = server("feature-extraction"), pipes("feature-extraction")
    texts = ["hello world", "bonjour le monde"]
    ids = [e.ids for e in pipe.tokenizer.encode(texts)]
    status, _, by_text = http(url + "/embed", "POST", {"inputs": texts})
    status2, _, by_ids = http(url + "/embed", "POST", {"inputs": [texts[0], ids[1]]})
    assert status == status2 == 200 and np.allclose(by_text, by_ids, atol=1e-6)
    status, _, one = http(url + "/embed", "POST", {"inputs": ids[0]})
    assert status == 200 and len(one) == 1
    status, _, all_tokens = http(url + "/embed_all", "POST", {"inputs": [ids[0]]})
    assert status == 200 and len(all_tokens[0]) == len(ids[0])
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    res = client.embeddings.create(model="x", input=ids, encoding_format="float")
    assert np.allclose([d.embedding for d in res.data], pipe.embed(texts), atol=1e-6)
    size = pipe.tokenizer.backend.get_vocab_size(with_added_tokens=True)
    for bad in ([size], [-1], [[[1]]], [1.5], [True]):
        status, _, body = http(url + "/embed", "POST", {"inputs": bad})
        assert status == 422, (bad, body)
    status, _, body = http(url + "/embed", "POST", {"inputs": [5] * 300_000})
    assert status == 413, body
