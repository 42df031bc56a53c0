"""The Lambda adapter: every route in both API Gateway payload formats, errors as JSON with the
right status, S3 loading (moto), local HTTP serving, and the real awslambdaric runtime client
driving the handler exactly as the image's CMD does."""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.bundles import with_heads
from tests.conftest import ROOT, needs_bundles, rewrite_manifest

pytestmark = [needs_bundles, pytest.mark.serving]
EVENTS = ROOT / "events"


def rest_event(method: str, path: str, body: str | None, headers=None, b64=False) -> dict:
    """API Gateway REST (payload 1.0) proxy event."""
    event = json.loads((EVENTS / "rest-predict-fill-mask.json").read_text())
    event.update(httpMethod=method, path=path, resource="/{proxy+}", headers=headers or
                 {"Content-Type": "application/json"}, body=body, isBase64Encoded=b64)
    event["requestContext"].update(httpMethod=method, path=path)
    return event


def http_event(method: str, path: str, body: str | None, headers=None, b64=False) -> dict:
    """HTTP API (payload 2.0) event."""
    event = json.loads((EVENTS / "http-predict-fill-mask.json").read_text())
    event.update(rawPath=path, headers=headers or {"content-type": "application/json"},
                 body=body, isBase64Encoded=b64)
    event["requestContext"]["http"].update(method=method, path=path)
    return event


@pytest.fixture(scope="module")
def embed_bundle(bundle_factory):
    return bundle_factory("feature-extraction")


@pytest.fixture(scope="module")
def handlers(bundle_factory):
    from xlmr_serverless.aws_lambda.app import make_handler
    from xlmr_serverless.aws_lambda.config import Settings

    def make(task: str, heads: tuple[str, ...] = (), **overrides):
        settings = dataclasses.replace(Settings.from_env({}), bundle_dir=bundle_factory(
            task, **with_heads(heads)), **overrides)
        return make_handler(settings)

    return make


def call(handler, event):
    from xlmr_serverless.aws_lambda.local import LocalContext

    res = handler(event, LocalContext(aws_request_id="req-123"))
    headers = dict(res.get("headers") or {})
    headers.update({k: v[0] for k, v in (res.get("multiValueHeaders") or {}).items()})
    return res["statusCode"], json.loads(res["body"]), headers


@pytest.mark.parametrize("make_event", [rest_event, http_event])
def test_routes(handlers, make_event):
    fe, tc = handlers("feature-extraction"), handlers("text-classification")
    status, body, headers = call(fe, make_event("GET", "/health", None))
    assert status == 200 and body["task"] == "feature-extraction" and body["provider"] == "cpu"
    assert body["precision"] == "int8" and len(body["bundle_sha256"]) == 64
    assert headers["Content-Type"] == "application/json"
    status, body, _ = call(fe, make_event("POST", "/embed", json.dumps({"inputs": ["a", "b c"]})))
    assert status == 200 and len(body) == 2 and len(body[0]) == 32
    status, body, _ = call(fe, make_event("POST", "/v1/embeddings", json.dumps({"input": "hé"})))
    assert status == 200 and body["object"] == "list" and body["usage"]["prompt_tokens"] > 0
    assert body["data"][0]["index"] == 0 and len(body["data"][0]["embedding"]) == 32
    status, body, _ = call(tc, make_event("POST", "/predict", json.dumps(
        {"inputs": "Berlin is nice", "parameters": {"top_k": 2}})))
    # the Inference API's shape: one list per input, best first (InferenceClient reads it)
    assert status == 200 and len(body) == 1 and [set(d) for d in body[0]] == [{"label", "score"}] * 2
    assert body[0][0]["score"] >= body[0][1]["score"]
    status, body, _ = call(tc, make_event("POST", "/rerank", json.dumps(
        {"query": "capital of France", "texts": ["Paris", "Lyon", "Berlin"], "return_text": True})))
    assert status == 200 and sorted(d["index"] for d in body) == [0, 1, 2]
    assert body == sorted(body, key=lambda d: -d["score"]) and "text" in body[0]


def test_predict_matches_the_runtime(handlers, bundle_factory):
    from xlmr_serverless.runtime import load

    pipe = load(bundle_factory("token-classification"))
    status, body, _ = call(handlers("token-classification"), http_event("POST", "/predict", json.dumps(
        {"inputs": "Wolfgang lives in Berlin", "parameters": {"aggregation_strategy": "simple",
                                                              "ignore_labels": []}})))
    expect = pipe("Wolfgang lives in Berlin", aggregation_strategy="simple", ignore_labels=[])
    assert status == 200 and [e["word"] for e in body] == [e["word"] for e in expect]


def test_base64_body_and_header_case(handlers):
    body = base64.b64encode(json.dumps({"inputs": ["x"]}).encode()).decode()
    for make in (rest_event, http_event):
        status, out, _ = call(handlers("feature-extraction"), make(
            "POST", "/embed", body, headers={"CONTENT-TYPE": "application/json"}, b64=True))
        assert status == 200 and len(out) == 1


def test_errors_become_json_with_status(handlers, monkeypatch):
    fe = handlers("feature-extraction", max_body_bytes=5000, max_inputs=3)
    cases = [
        (http_event("POST", "/predict", "{not json"), 400, "bad_json"),
        (http_event("POST", "/predict", None), 400, "empty_body"),
        (http_event("POST", "/predict", json.dumps({"text": "x"})), 422, "validation"),
        (http_event("POST", "/predict", json.dumps({"inputs": "x", "parameters": {"topk": 1}})),
         422, "invalid_input"),
        (http_event("POST", "/predict", json.dumps({"inputs": "x" * 6000})), 413,
         "payload_too_large"),
        (http_event("POST", "/predict", json.dumps({"inputs": ["a"] * 4})), 422,
         "too_many_inputs"),
        # TEI's routes answer as TEI does: a request over a size limit is a 413
        (http_event("POST", "/embed", json.dumps({"inputs": ["a"] * 4})), 413, "too_many_inputs"),
        (http_event("POST", "/embed", json.dumps({"inputs": ["word " * 600]})), 413,
         "input_too_long"),
        # a route the bundle cannot serve: TEI's 424 and error_type "backend"
        (http_event("POST", "/rerank", json.dumps({"query": "a", "texts": ["b"]})), 424,
         "unsupported_task"),
        (http_event("POST", "/predict", json.dumps({"inputs": []})), 400, "empty_input"),
    ]
    for event, status, kind in cases:
        got, body, _ = call(fe, event)
        assert (got, body["type"]) == (status, kind), body
        tei = event["rawPath"] in ("/embed", "/rerank")
        assert set(body) == {"error", "type", "error_type"}
        assert body["error_type"] == ({"too_many_inputs": "validation", "input_too_long":
                                       "validation", "unsupported_task": "backend"}.get(
                                          kind, "validation") if tei else kind)
    _, body, _ = call(fe, http_event("POST", "/embed", json.dumps({"inputs": ["word " * 600]})))
    assert "at most 512 tokens. Given: 602" in body["error"]
    got, out, _ = call(fe, http_event("POST", "/embed", json.dumps({"inputs": ["word " * 600],
                                                                    "truncate": True})))
    assert got == 200 and len(out) == 1
    # anything unexpected: 500 with the request id, no stack trace; the container goes on
    monkeypatch.setattr(fe.service.pipe, "embed", lambda *a, **k: 1 / 0)
    got, body, _ = call(fe, http_event("POST", "/embed", json.dumps({"inputs": "x"})))
    assert got == 500 and body == {"error": "internal error (request id req-123)",
                                   "type": "internal_error", "error_type": "backend"}  # TEI's
    monkeypatch.undo()
    assert call(fe, http_event("POST", "/embed", json.dumps({"inputs": "x"})))[0] == 200


def test_cors_when_configured(handlers):
    fe = handlers("feature-extraction", cors_origin="https://example.com")
    _, _, headers = call(fe, http_event("GET", "/health", None, headers={"origin": "https://example.com"}))
    assert headers.get("Access-Control-Allow-Origin") == "https://example.com"


def test_direct_invocation(handlers):
    from xlmr_serverless.aws_lambda.local import LocalContext

    tc = handlers("text-classification")
    out = tc({"inputs": ["a", "b"], "parameters": {"top_k": 1}}, LocalContext())
    assert len(out) == 2 and out[0][0]["label"] in {"negative", "neutral", "positive"}
    err = tc({"inputs": "x", "parameters": {"bogus": 1}}, LocalContext())
    assert err["statusCode"] == 422 and "bogus" in err["error"]


def test_io_binding_setting():
    from xlmr_serverless.aws_lambda.config import Settings

    assert Settings.from_env({}).io_binding is None  # auto: on for CUDA, off on CPU
    assert Settings.from_env({"XLMR_IO_BINDING": "False"}).io_binding is False
    assert Settings.from_env({"XLMR_IO_BINDING": "true"}).io_binding is True
    with pytest.raises(ValueError, match="XLMR_IO_BINDING must be auto, true or false"):
        Settings.from_env({"XLMR_IO_BINDING": "yes please"})


def test_every_setting_has_the_prefix_and_old_names_still_read_with_a_warning(capfd):
    from xlmr_serverless.aws_lambda.app import make_handler
    from xlmr_serverless.aws_lambda.config import PREFIX, UNPREFIXED, VARIABLES, Settings, variable

    assert all(variable(f).startswith(PREFIX) for f in VARIABLES)
    new = Settings.from_env({"XLMR_MAX_TOKENS": "77", "XLMR_LOG_INPUTS": "TRUE",
                             "XLMR_BUNDLE_DIR": "/b"})
    assert (new.max_tokens, new.log_inputs, str(new.bundle_dir), new.renamed) == \
        (77, True, "/b", ())
    old = Settings.from_env({"MAX_TOKENS": "77", "LOG_INPUTS": "true", "BUNDLE_DIR": "/b",
                             "XLMR_MAX_INPUTS": "5", "MAX_INPUTS": "9"})
    assert (old.max_tokens, old.log_inputs, str(old.bundle_dir)) == (77, True, "/b")
    assert old.max_inputs == 5  # the prefixed name wins
    assert set(old.renamed) == {"MAX_TOKENS", "LOG_INPUTS", "BUNDLE_DIR"} <= UNPREFIXED
    assert Settings.from_env({}) == Settings()  # the defaults are the fields'
    with pytest.raises(ValueError, match="XLMR_MAX_TOKENS must be an integer"):
        Settings.from_env({"MAX_TOKENS": "many"})
    make_handler(old)  # no bundle at /b: the warning comes before the load's own error
    logs = [json.loads(x) for x in capfd.readouterr().out.splitlines() if x.startswith("{")]
    warned = next(x for x in logs if x.get("level") == "WARNING")
    assert warned["renamed"]["MAX_TOKENS"] == "XLMR_MAX_TOKENS"


def test_the_readme_settings_table_is_the_code():
    """README's table names every variable with the field's default, and nothing else."""
    from xlmr_serverless.aws_lambda.config import VARIABLES, Settings, variable

    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
        if line.startswith("| `XLMR_"):
            rows[cells[0]] = cells[1]
    defaults = Settings()
    expected = {}
    for field in VARIABLES:
        value = getattr(defaults, field)
        expected[variable(field)] = "auto" if field == "io_binding" else "" if value is None \
            else ",".join(map(str, value)) if isinstance(value, tuple) \
            else str(value).lower() if isinstance(value, bool) else str(value)
    assert rows == expected


def test_warm_up_setting(embed_bundle):
    from xlmr_serverless.aws_lambda.config import Settings
    from xlmr_serverless.runtime import load

    assert Settings.from_env({}).warm_up_lengths == (8, 64, 256)
    assert Settings.from_env({"XLMR_WARM_UP": "16, 512"}).warm_up_lengths == (16, 512)
    assert Settings.from_env({"XLMR_WARM_UP": "none"}).warm_up_lengths == ()
    for bad in ("8,-1", "eight", "8,,64"):
        with pytest.raises(ValueError, match="XLMR_WARM_UP must be sequence lengths"):
            Settings.from_env({"XLMR_WARM_UP": bad})
    bundle = load(embed_bundle).bundle
    longest = bundle.manifest.max_length
    # lengths past the model's positions run at its longest, once
    assert list(bundle.warm_up((8, longest + 100, longest * 2))) == ["8", str(longest)]
    assert bundle.warm_up(()) == {}


@pytest.mark.parametrize("begun", [False, True], ids=["loaded-in-place", "begun-before-imports"])
def test_a_bundle_that_fails_to_load_answers_clearly(tmp_path, capfd, begun):
    """The log says why; the caller gets "model unavailable" and the request id, no path;
    the same when the load was begun on its own thread before the handler's imports
    (handler.py) and failed there."""
    from xlmr_serverless.aws_lambda.app import make_handler
    from xlmr_serverless.aws_lambda.config import Settings
    from xlmr_serverless.aws_lambda.loading import start_loading

    settings = dataclasses.replace(Settings.from_env({}), bundle_dir=tmp_path / "none")
    h = make_handler(settings, loading=start_loading(settings) if begun else None)
    assert "bundle folder not found" in capfd.readouterr().out
    status, body, _ = call(h, http_event("GET", "/health", None))
    assert status == 503 and body == {"status": "error", "error": "model unavailable"}
    status, body, _ = call(h, http_event("POST", "/predict", json.dumps({"inputs": "x"})))
    assert status == 503 and body["error"] == "model unavailable (request id req-123)"
    assert str(tmp_path) not in json.dumps(body)


def test_the_handlers_imports_wait_for_the_loads_own(embed_bundle, monkeypatch):
    """start_loading (handler.py, before its Powertools imports) returns once the load's own
    imports are done and onnxruntime's session build has begun, so the two threads do not
    import side by side; the load then finishes on its thread."""
    from xlmr_serverless.aws_lambda.config import Settings
    from xlmr_serverless.aws_lambda.loading import start_loading
    from xlmr_serverless.runtime import session

    steps: list[str] = []
    build = session._create_session

    def watched(*args, **kwargs):
        steps.append("session build begun")
        made = build(*args, **kwargs)
        steps.append("session built")
        return made

    monkeypatch.setattr(session, "_create_session", watched)
    settings = dataclasses.replace(Settings.from_env({}), bundle_dir=embed_bundle)
    future = start_loading(settings)
    assert steps[:1] == ["session build begun"]
    pipe, phases = future.result(timeout=120)
    assert steps == ["session build begun", "session built"]
    assert {"tokenizer", "session", "load"} <= set(phases)
    assert pipe("hello")  # it serves


@pytest.mark.parametrize("event", [
    {"version": "2.0", "requestContext": None, "rawPath": "/health"},
    {"version": "2.0", "requestContext": {"domainName": "x"}, "rawPath": "/health"},
    {"httpMethod": "GET", "requestContext": {}},  # REST without a path
    {"httpMethod": 5, "path": "/health", "requestContext": {}},
])
def test_malformed_events_get_a_400(handlers, event):
    status, body, _ = call(handlers("feature-extraction"), event)
    assert status == 400 and body["type"] == "bad_event"


@pytest.mark.parametrize("event", [[1, 2], "text", 7, None])
def test_non_object_events_get_a_status(handlers, event):
    from xlmr_serverless.aws_lambda.local import LocalContext

    res = handlers("feature-extraction")(event, LocalContext())
    assert res["statusCode"] == 400 and json.loads(res["body"])["type"] == "bad_event"


def test_undecodable_bodies_are_400s(handlers):
    fe = handlers("feature-extraction")
    bad_b64 = http_event("POST", "/embed", "%%%not base64", b64=True)
    bad_utf8 = http_event("POST", "/embed", base64.b64encode(b"\xff\xfe{").decode(), b64=True)
    deep = http_event("POST", "/predict", "[" * 100_000 + "]" * 100_000)
    for event in (bad_b64, bad_utf8, deep):
        status, body, _ = call(fe, event)
        assert status == 400 and body["type"] in ("bad_body", "bad_json"), body
    status, body, _ = call(fe, http_event("POST", "/embed", json.dumps({"inputs": "a\ud800b"})))
    assert status == 422 and "Unicode" in body["error"]


@pytest.mark.parametrize("template", ["{1}", "{x}", "{", "}", "{:>200000000}", "{}{}", "no field",
                                      "{0}", "{!r}", 5])
def test_zero_shot_templates_are_checked_before_any_work(handlers, template):
    """One plain {} and nothing else: a 98-byte template once asked for 9 GB."""
    status, body, _ = call(handlers("zero-shot-classification"), http_event("POST", "/predict",
        json.dumps({"inputs": "x", "parameters": {"candidate_labels": ["a"],
                                                  "hypothesis_template": template}})))
    assert status == 422 and "hypothesis_template" in body["error"]


def test_truncation_flags_inside_parameters_are_booleans(handlers):
    """`parameters.truncate` (TEI's flag, which /predict takes inside parameters too) is no
    task's parameter, so no task schema checks it: a non-boolean is a 422, not a truthy
    string."""
    fm = handlers("fill-mask")
    for value in ("no", 0, [True]):
        status, body, _ = call(fm, http_event("POST", "/predict", json.dumps(
            {"inputs": "Paris is the <mask>.", "parameters": {"truncate": value}})))
        assert status == 422 and "truncate must be true or false" in body["error"], body
    status, _, _ = call(fm, http_event("POST", "/predict", json.dumps(
        {"inputs": "Paris is the <mask>.", "parameters": {"truncate": True}})))
    assert status == 200


WRONG = {"boolean": "yes", "string": 5, "integer": "five", "array": "x", "object": [1]}


def message(body: dict) -> str:
    """An error body's words, in our convention or OpenAI's."""
    return body["error"]["message"] if isinstance(body["error"], dict) else body["error"]


def test_every_request_field_is_checked_by_its_routes_schema(handlers):
    """Derived from the route table's schemas, not written beside them: for every field of
    every request body, a value of the wrong type is a 422 naming that field; an unknown field
    and a missing required one are 422s naming them; the route's sample answers."""
    from xlmr_serverless.aws_lambda.routes import ROUTES
    from xlmr_serverless.runtime.tasks import specs

    checked = 0
    # (a route that hands its body to another route, /invocations, is that route's schema)
    for r in (r for r in ROUTES if r.request is not None and "properties" in r.request):
        task = next((t for t, s in specs().items() if r.path in s.routes), "feature-extraction")
        handler = handlers(task, r.heads)
        sample = dict(r.sample or specs()[task].sample)
        assert call(handler, http_event("POST", r.path, json.dumps(sample)))[0] == 200, r.path
        for field, schema in r.request["properties"].items():
            kinds = schema.get("type") or [s.get("type") for s in schema.get("anyOf", [])]
            kinds = [kinds] if isinstance(kinds, str) else kinds
            wrong = next((WRONG[k] for k in WRONG if k not in kinds and kinds), None)
            if wrong is None or (isinstance(wrong, str) and "string" in kinds):
                continue
            status, body, _ = call(handler, http_event("POST", r.path,
                                                       json.dumps({**sample, field: wrong})))
            assert status == 422 and field in message(body), (r.path, field, body)
            checked += 1
        status, body, _ = call(handler, http_event("POST", r.path,
                                                   json.dumps({**sample, "bogus_field": 1})))
        assert status == 422 and "bogus_field" in message(body), (r.path, body)
        for field in r.request.get("required", []):
            rest = {k: v for k, v in sample.items() if k != field}
            status, body, _ = call(handler, http_event("POST", r.path, json.dumps(rest)))
            assert status == 422 and f"needs {field}" in message(body), (r.path, field, body)
    assert checked >= 12  # the typed fields of the five bodies were reached


@pytest.mark.parametrize("task, parameters", [
    ("text-classification", {"max_length": "abc"}), ("text-classification", {"truncation": 5}),
    ("text-classification", {"top_k": True}), ("feature-extraction", {"tokenize_kwargs": "abc"}),
    ("feature-extraction", {"tokenize_kwargs": {"padding": True}}),
    ("fill-mask", {"tokenizer_kwargs": [1]}), ("fill-mask", {"targets": [1]}),
    ("zero-shot-classification", {"candidate_labels": {"a": 1}}),
    ("question-answering", {"doc_stride": 1.5}), ("token-classification", {"stride": -1})])
def test_parameter_types_are_checked_by_the_spec_schema(handlers, task, parameters):
    """Each the spec's schema refuses (the one the OpenAPI document publishes): a 422 naming
    the parameter, never a 500 from deep inside a pipeline."""
    from xlmr_serverless.runtime.tasks import task_spec

    spec = task_spec(task)
    body = {**spec.sample, "parameters": {**spec.sample.get("parameters", {}), **parameters}}
    handler = handlers(task)
    status, answer, _ = call(handler, http_event("POST", "/predict", json.dumps(body)))
    assert status == 422 and f"parameter {next(iter(parameters))}" in answer["error"], answer
    # and the same request without the bad parameter answers
    status, _, _ = call(handler, http_event("POST", "/predict", json.dumps(spec.sample)))
    assert status == 200


def test_a_manifest_cannot_name_files_outside_its_folder(embed_bundle, tmp_path):
    import shutil

    from xlmr_serverless.runtime import BundleError, load

    for bad in ("../escaped-tokenizer.json", "/etc/passwd", "sub/tokenizer.json", ".."):
        copy = tmp_path / f"b{abs(hash(bad))}"
        shutil.copytree(embed_bundle, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["tokenizer"]["file"] = bad
        rewrite_manifest(copy, manifest)
        with pytest.raises(BundleError, match="not a plain name inside the bundle"):
            load(copy)


def test_a_manifest_cannot_lie_about_its_task(bundle_factory, tmp_path):
    """A text-classification graph relabelled fill-mask (or feature-extraction) is refused."""
    import shutil

    from xlmr_serverless.runtime import BundleError, load

    copy = tmp_path / "relabelled"
    shutil.copytree(bundle_factory("text-classification"), copy)
    for task in ("fill-mask", "feature-extraction", "token-classification"):
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["task"] = task
        rewrite_manifest(copy, manifest)
        with pytest.raises(BundleError, match=f"the manifest says {task}, but the graph"):
            load(copy)


def test_logs_are_structured_and_hold_no_input_text(handlers, capfd):
    fe = handlers("feature-extraction")
    capfd.readouterr()
    call(fe, http_event("POST", "/embed", json.dumps({"inputs": ["secret words", "more"]})))
    lines = [json.loads(x) for x in capfd.readouterr().out.splitlines() if x.startswith("{")]
    answered = [x for x in lines if x.get("message") == "answered"]
    assert answered and answered[0]["route"] == "/embed" and answered[0]["latency_ms"] > 0
    tokens = sum(len(e.ids) for e in fe.service.pipe.tokenizer.encode(["secret words", "more"]))
    assert answered[0]["inputs"] == 2 and answered[0]["tokens"] == tokens
    assert not any("secret words" in json.dumps(x) for x in lines)


def test_the_cold_start_is_logged_phase_by_phase(bundle_factory, capfd):
    """The first log line says where init went (imports, manifest, onnxruntime import,
    tokenizer, session and verification, which overlap, and the whole), the first request's
    time follows once; `benchmarks.harness.handler_phases` reads the same lines."""
    from benchmarks.phases import handler_phases
    from xlmr_serverless.aws_lambda.app import make_handler
    from xlmr_serverless.aws_lambda.config import Settings

    capfd.readouterr()
    settings = dataclasses.replace(Settings.from_env({}),
                                   bundle_dir=bundle_factory("feature-extraction"))
    fe = make_handler(settings, imports_ms=12.5)
    for _ in range(2):
        call(fe, http_event("POST", "/embed", json.dumps({"inputs": "x"})))
    out = capfd.readouterr().out
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    loaded = next(x for x in lines if x.get("message") == "bundle loaded")
    phases = loaded["init_ms"]
    assert lines.index(loaded) == 0 and phases["imports"] == 12.5
    assert {"manifest", "import_onnxruntime", "tokenizer", "session", "overlapped",
            "load"} <= set(phases) and ({"verify", "verify_marker"} & set(phases))
    assert max(phases["tokenizer"], phases["session"]) <= phases["overlapped"] <= phases["load"]
    assert len([x for x in lines if x.get("message") == "first request"]) == 1  # once
    assert handler_phases(out)["phases"]["first_request"] > 0


def test_bundle_from_s3(embed_bundle, tmp_path):
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    from xlmr_serverless.aws_lambda.s3 import fetch_bundle
    from xlmr_serverless.runtime import load
    from xlmr_serverless.runtime.errors import BundleError

    with moto.mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="models")
        for f in embed_bundle.iterdir():
            s3.upload_file(str(f), "models", f"xlmr/v1/{f.name}")
        root = tmp_path / "tmp"
        (root / ".bundle-killed").mkdir(parents=True)  # a download killed mid-way
        (root / ".bundle-killed" / "model.int8.onnx.data").write_bytes(b"x" * 1000)
        local = fetch_bundle("s3://models/xlmr/v1/", root, s3)
        assert not (root / ".bundle-killed").exists()
        assert local.parent == root and load(local)("hello")
        mtime = (local / "tokenizer.json").stat().st_mtime_ns
        assert fetch_bundle("s3://models/xlmr/v1", root, s3) == local  # reused, not re-fetched
        assert (local / "tokenizer.json").stat().st_mtime_ns == mtime
        s3.put_object(Bucket="models", Key="xlmr/bad/manifest.json",
                      Body=(embed_bundle / "manifest.json").read_bytes())
        for f in embed_bundle.iterdir():
            if f.name != "manifest.json":
                s3.put_object(Bucket="models", Key=f"xlmr/bad/{f.name}", Body=f.read_bytes()[:-1] + b"!")
        fresh = tmp_path / "fresh"  # a new sandbox: the same manifest is not cached there
        fresh.mkdir()
        with pytest.raises(BundleError, match="sha256|size"):
            fetch_bundle("s3://models/xlmr/bad", fresh, s3)
        assert list(fresh.iterdir()) == []  # no half-written folder
        with pytest.raises(BundleError, match="cannot read"):
            fetch_bundle("s3://models/missing", root, s3)

        # the handler's way: begun on its thread (which lets the caller's imports go on while
        # the download waits on the network), into this sandbox's /tmp
        import functools

        from xlmr_serverless.aws_lambda import s3 as s3_module
        from xlmr_serverless.aws_lambda.config import Settings
        from xlmr_serverless.aws_lambda.loading import start_loading

        sandbox = tmp_path / "sandbox"
        sandbox.mkdir()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(s3_module, "fetch_bundle",
                       functools.partial(fetch_bundle, root=sandbox, client=s3))
            settings = dataclasses.replace(Settings.from_env({}),
                                           model_s3_uri="s3://models/xlmr/v1/")
            pipe, phases = start_loading(settings).result(timeout=120)
        assert pipe("hello") and phases["s3_download"] > 0
        assert pipe.bundle.folder.parent == sandbox


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(url: str) -> None:
    """Until `url`/health answers (a server starting in another process), at most 30 s."""
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            return
        except OSError:
            time.sleep(0.1)


def test_xlmr_serve_answers_http(embed_bundle):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "xlmr_serverless.cli", "serve", "--bundle",
                             str(embed_bundle), "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_server(url)
        req = urllib.request.Request(url + "/embed", data=json.dumps({"inputs": "hi"}).encode(),
                                     headers={"Content-Type": "application/json"})
        assert len(json.loads(urllib.request.urlopen(req, timeout=10).read())[0]) == 32
        bad = urllib.request.Request(url + "/predict", data=b"{oops")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(bad, timeout=10)
        assert err.value.code == 400 and json.loads(err.value.read())["type"] == "bad_json"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_lambda_image_serves_as_a_sagemaker_container(embed_bundle, tmp_path):
    """lambda/Dockerfile's entrypoint, run as its ENTRYPOINT runs it: `serve` (SageMaker's
    `docker run IMAGE serve`) answers GET /ping and POST /invocations over HTTP on
    SAGEMAKER_BIND_TO_PORT, the bundle and settings from the environment; any other argument
    goes to the base image's entrypoint unchanged (Lambda's handler name)."""
    import shlex

    docker = (ROOT / "lambda" / "Dockerfile").read_text()
    entry = next(x for x in docker.splitlines() if x.startswith("ENTRYPOINT"))
    command = json.loads(entry.split(None, 1)[1])
    script = ROOT / "lambda" / "entrypoint.sh"
    assert command[-1].endswith("/xlmr_serverless/aws_lambda/entrypoint.sh")
    assert json.loads(docker.rstrip().splitlines()[-1].split(None, 1)[1]) == \
        ["xlmr_serverless.aws_lambda.handler.handler"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    fake = tmp_path / "lambda-entrypoint.sh"
    fake.write_text('#!/bin/sh\necho "base: $*"\n')
    fake.chmod(0o755)
    res = subprocess.run(["/bin/sh", str(script), "xlmr_serverless.aws_lambda.handler.handler"],
                         env={**env, "LAMBDA_BASE_ENTRYPOINT": str(fake)}, capture_output=True,
                         text=True, timeout=30)
    assert res.stdout.strip() == "base: xlmr_serverless.aws_lambda.handler.handler", res.stderr
    port = free_port()
    proc = subprocess.Popen(["/bin/sh", str(script), "serve"], cwd=tmp_path, text=True,
                            env={**env, "SAGEMAKER_BIND_TO_PORT": str(port),
                                 "XLMR_BUNDLE_DIR": str(embed_bundle)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_server(url)
        with urllib.request.urlopen(url + "/ping", timeout=10) as ping:
            assert ping.status == 200 and json.loads(ping.read())["status"] == "ok"
        body = json.dumps({"inputs": ["hello", "world"]}).encode()
        answers = []
        for path in ("/invocations", "/embed"):
            req = urllib.request.Request(url + path, data=body,
                                         headers={"Content-Type": "application/json"})
            answers.append(json.loads(urllib.request.urlopen(req, timeout=30).read()))
        assert answers[0] == answers[1] and len(answers[0]) == 2
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
    assert f"serving on port {port}" in out, shlex.quote(out[-2000:])


def test_awslambdaric_end_to_end(embed_bundle, handlers):
    """`python -m awslambdaric xlmr_serverless.aws_lambda.handler.handler`: the image's CMD, on
    a fake Runtime API, with the environment lambda/Dockerfile sets (its allocator, tcmalloc,
    preloaded: benchmarks/image_layout.image_env finds this machine's copy). The answers are
    the in-process handler's, made with this process's own allocator."""
    pytest.importorskip("awslambdaric")
    from tests.image_layout import image_env
    from tests.runtime_api import RuntimeApi

    try:
        image, missing = image_env(), ""
        assert image.get("LD_PRELOAD"), "lambda/Dockerfile preloads an allocator"
    except FileNotFoundError as exc:  # scripts/setup.sh installs it where apt-get can
        image, missing = {}, str(exc)
    embed = rest_event("POST", "/embed", json.dumps({"inputs": ["héllo", "wörld"]}))
    events = [dict(http_event("GET", "/health", None), _id="r1"), dict(embed, _id="r2"),
              dict(http_event("POST", "/predict", "{broken"), _id="r3"),
              dict({"inputs": "direct call"}, _id="r4")]
    api = RuntimeApi(events)
    env = {**os.environ, **image, "AWS_LAMBDA_RUNTIME_API": api.address,
           "XLMR_BUNDLE_DIR": str(embed_bundle), "AWS_LAMBDA_FUNCTION_NAME": "xlmr",
           "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048", "POWERTOOLS_METRICS_NAMESPACE": "test",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "awslambdaric",
                             "xlmr_serverless.aws_lambda.handler.handler"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert api.done.wait(120), f"the runtime client did not fetch every event: {proc.poll()}"
        deadline = time.time() + 30
        while len(api.responses) < 4 and time.time() < deadline:
            time.sleep(0.1)
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
    assert not api.errors, api.errors
    assert json.loads(api.responses["r2"]["body"]) == call(handlers("feature-extraction"),
                                                           embed)[1]
    assert api.responses["r1"]["statusCode"] == 200
    assert len(json.loads(api.responses["r2"]["body"])) == 2
    assert api.responses["r3"]["statusCode"] == 400
    assert isinstance(api.responses["r4"], list)
    logs = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    assert any(x.get("message") == "bundle loaded" for x in logs)
    answered = [x for x in logs if x.get("message") == "answered"]
    assert {x.get("function_request_id") for x in answered} >= {"r2"}  # request id in the logs
    assert all("cold_start" in x for x in answered)  # Powertools' context fields
    assert any("_aws" in x and "ColdStart" in json.dumps(x) for x in logs)  # EMF metric
    if missing:
        pytest.skip(f"answered without the image's allocator: {missing}")
    assert Path(image["LD_PRELOAD"]).name in maps  # the image's allocator served that process
    assert "large alloc" not in out  # tcmalloc's report stays quiet (threshold set with it)


def test_the_served_process_sends_no_onnxruntime_telemetry(embed_bundle, tmp_path):
    """onnxruntime's Linux telemetry (1.29+) writes a device id and an event store under the
    cache folder at its first session and uploads from there: a bare session does (where this
    onnxruntime has it), the handler's process, with the same cache folder, does not."""
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    model = next(p for p in sorted(embed_bundle.glob("*.onnx")))
    for name in ("bare", "handler"):
        cache = tmp_path / name
        cache.mkdir()
        code = (f"import onnxruntime as ort; ort.InferenceSession({str(model)!r}, "
                "providers=['CPUExecutionProvider'])" if name == "bare" else
                "from xlmr_serverless.aws_lambda.handler import handler")  # loads the bundle
        subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=ROOT,
                       env={**env, "HOME": str(cache), "XDG_CACHE_HOME": str(cache),
                            "XLMR_BUNDLE_DIR": str(embed_bundle), "PYTHONPATH": str(ROOT),
                            "POWERTOOLS_METRICS_NAMESPACE": "test"})
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*onnxruntime*"))
    assert not [p for p in written if p.startswith("handler")], written
    if not written:
        pytest.skip("this onnxruntime writes no telemetry store (built without it)")


def test_the_cold_start_floor_does_the_handlers_work(embed_bundle, tmp_path):
    """benchmarks/experiments/cold_start_floor/run.py's floor: every step the handler's cold start takes
    (runtime client, numpy, onnxruntime, tokenizers, Powertools, the tokenizer, the session,
    one run of the graph on the sample request's text) in a process of its own; a model file
    that does not load fails it instead of timing a start that did less."""
    pytest.importorskip("awslambdaric")
    from benchmarks.experiments.cold_start_floor.run import VARIANTS, cpu_model_file, one_floor, request_text
    from xlmr_serverless.aws_lambda.local import sample_event

    text = request_text(sample_event(embed_bundle, "hello"))
    assert text == "hello"
    python, task = Path(sys.executable), tmp_path  # this interpreter's own site-packages
    for steps in VARIANTS.values():
        start = one_floor(python, task, embed_bundle, 1, text, steps, {})
        assert start["seconds"] > 0 and start["peak_rss_mb"] > 0
    broken = tmp_path / "broken"
    shutil.copytree(embed_bundle, broken)
    (broken / cpu_model_file(broken)).write_bytes(b"not a model")
    with pytest.raises(RuntimeError, match="exited 1"):
        one_floor(python, task, broken, 1, text, VARIANTS["floor"], {})


def test_gpu_image_wsgi_app_serves_the_same_routes(embed_bundle, monkeypatch):
    """lambda/wsgi.py's create_app (the GPU image's `waitress-serve --call` entry) through a
    WSGI call, as waitress makes it."""
    import importlib
    import io

    monkeypatch.setenv("XLMR_BUNDLE_DIR", str(embed_bundle))
    wsgi = importlib.import_module("xlmr_serverless.aws_lambda.wsgi").create_app()
    body = json.dumps({"inputs": ["hello"]}).encode()
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = status, dict(headers)

    out = b"".join(wsgi({"REQUEST_METHOD": "POST", "PATH_INFO": "/embed", "QUERY_STRING": "",
                             "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
                             "wsgi.input": io.BytesIO(body)}, start_response))
    assert seen["status"].startswith("200") and len(json.loads(out)[0]) == 32
    assert seen["headers"]["Content-Length"] == str(len(out))
    out = b"".join(wsgi({"REQUEST_METHOD": "POST", "PATH_INFO": "/predict", "QUERY_STRING": "",
                             "CONTENT_LENGTH": "3", "wsgi.input": io.BytesIO(b"{x}")}, start_response))
    assert seen["status"].startswith("400") and json.loads(out)["type"] == "bad_json"


def test_concurrent_clients_never_mix_answers(embed_bundle):
    """64 clients at once, 2,048 requests over HTTP on loopback: every answer is its own
    request's, and no connection is reset (the listen backlog holds the burst)."""
    from concurrent.futures import ThreadPoolExecutor

    from xlmr_serverless.aws_lambda.local import http_server

    srv = http_server(embed_bundle, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_port}/embed"
    texts = [f"sentence number {i} about {w}" for i, w in enumerate(
        ["Berlin", "Paris", "Tokyo", "Cairo", "Lima", "Oslo", "Rome", "Quito"] * 2)]

    def ask(text: str) -> list[float]:
        req = urllib.request.Request(url, data=json.dumps({"inputs": text}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as res:
            return json.loads(res.read())[0]

    try:
        expect = {t: ask(t) for t in texts}  # one at a time first
        jobs = [texts[(i * 7) % len(texts)] for i in range(2048)]
        with ThreadPoolExecutor(max_workers=64) as pool:
            results = list(pool.map(lambda t: (t, ask(t)), jobs))  # a reset would raise here
    finally:
        srv.shutdown()
        srv.server_close()
    wrong = [t for t, got in results if got != expect[t]]
    assert len(results) == 2048 and wrong == []


@pytest.mark.parametrize("length", ["abc", "-5"])
def test_a_bad_content_length_is_a_400(embed_bundle, length):
    """Over a raw socket: the server answers (never closes the connection without one)."""
    from xlmr_serverless.aws_lambda.local import http_server

    srv = http_server(embed_bundle, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with socket.create_connection(("127.0.0.1", srv.server_port), timeout=30) as s:
            s.sendall(f"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {length}\r\nConnection: close\r\n\r\n".encode())
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
    finally:
        srv.shutdown()
        srv.server_close()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split()[1] == b"400" and json.loads(body)["type"] == "bad_request"


def test_a_bundle_verified_at_image_build_is_not_hashed_at_cold_start(embed_bundle, tmp_path,
                                                                     monkeypatch):
    """lambda/Dockerfile runs `python -m xlmr_serverless.runtime.verify /opt/bundle`: every file
    hashed at build, a mark beside the bundle; a cold start (an empty /tmp) then hashes
    nothing; a damaged bundle fails the build and leaves no mark; a file changed after the
    build misses the mark and is refused."""
    import shutil

    import xlmr_serverless.runtime.verify as verify_module
    from xlmr_serverless.runtime import BundleError, load
    from xlmr_serverless.runtime.manifest import read_manifest

    monkeypatch.setattr(verify_module, "MARKS", tmp_path / "sandbox-tmp")
    image = tmp_path / "opt"
    bundle = image / "bundle"
    shutil.copytree(embed_bundle, bundle)
    build = [sys.executable, "-m", "xlmr_serverless.runtime.verify", str(bundle)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run(build, env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert [p.name for p in (image / ".xlmr-verified").iterdir()] == [
        hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()]
    assert verify_module.verify_once(read_manifest(bundle), bundle) is False  # not hashed
    assert not (tmp_path / "sandbox-tmp").exists()
    assert load(bundle).bundle.timings.get("verify_marker") is not None

    data = bundle / "model.int8.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 3] ^= 0x01
    before = data.stat()
    data.write_bytes(bytes(raw))
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns + 2 * 10**9))  # a later second
    with pytest.raises(BundleError, match="sha256 does not match"):
        load(bundle)
    shutil.rmtree(image / ".xlmr-verified")
    bad = subprocess.run(build, env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "sha256 does not match" in bad.stderr
    assert not (image / ".xlmr-verified").exists()


def test_verification_runs_beside_the_loads_and_once(embed_bundle, tmp_path, monkeypatch):
    """On by default (XLMR_VERIFY_BUNDLE): every file is hashed, beside the tokenizer and session
    loads; a flipped byte is refused; a marker keyed by the manifest's digest spares a
    restarted process in the same sandbox the second hashing."""
    import shutil

    from xlmr_serverless.aws_lambda.config import Settings
    from xlmr_serverless.runtime import BundleError, load
    from xlmr_serverless.runtime.manifest import read_manifest
    from xlmr_serverless.runtime.verify import verify_once

    assert Settings.from_env({}).verify is True
    copy = tmp_path / "b"
    shutil.copytree(embed_bundle, copy)
    import xlmr_serverless.runtime.verify as verify_module

    monkeypatch.setattr(verify_module, "MARKS", tmp_path / "marks")
    assert verify_once(read_manifest(copy), copy) is True  # hashed
    assert verify_once(read_manifest(copy), copy) is False  # marker: not again
    data = copy / "model.int8.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))  # same size, new mtime: the marker no longer matches
    with pytest.raises(BundleError, match="model.int8.onnx.data: sha256 does not match"):
        verify_once(read_manifest(copy), copy)
    with pytest.raises(BundleError, match="sha256 does not match"):
        load(copy)  # the loads went on beside it, but nothing is served


def test_the_images_environment_is_read_as_docker_reads_it(tmp_path, monkeypatch):
    """tests.image_layout.image_env: ENV instructions with continuations, quotes and
    comments, a later value winning; only what changes how processes run is carried (the
    allocator), its library found by file name in this machine's folders, or an error."""
    import tests.image_layout as il

    text = ("FROM base\n# ENV NOT=this\nENV A=1 \\\n    LD_PRELOAD=/usr/lib64/libfake.so.4 \\\n"
            '    TCMALLOC_X="two words"\nRUN echo ENV=no\nENV A=2 TCMALLOC_Y=3\n')
    assert il.dockerfile_env(text) == {"A": "2", "LD_PRELOAD": "/usr/lib64/libfake.so.4",
                                       "TCMALLOC_X": "two words", "TCMALLOC_Y": "3"}
    checkout = tmp_path / "checkout"
    (checkout / "lambda").mkdir(parents=True)
    (checkout / "lambda" / "Dockerfile").write_text(text)
    with pytest.raises(FileNotFoundError, match="libfake.so.4"):
        il.image_env(checkout)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "libfake.so.4").write_bytes(b"")
    monkeypatch.setattr(il, "LIBRARY_DIRS", (str(tmp_path / "nowhere"), str(tmp_path / "lib")))
    assert il.image_env(checkout) == {"LD_PRELOAD": str(tmp_path / "lib" / "libfake.so.4"),
                                      "TCMALLOC_X": "two words", "TCMALLOC_Y": "3"}


def test_the_image_layout_runs_compiled_code_on_a_bundle_verified_at_build(embed_bundle,
                                                                           tmp_path):
    """What lambda/Dockerfile builds, without Docker (tests/image_layout.py reads its COPY
    lines): the package placed under xlmr_serverless and compiled (Lambda's /var/task is
    read-only: bytecode not in the image is made again at every cold start), the bundle's
    verify step run from that layout; a load from the layout then hashes nothing."""
    import importlib.util
    import shutil
    import site

    from tests.image_layout import place_package

    task, opt = tmp_path / "task", tmp_path / "opt"
    place_package(ROOT, task)
    modules = list((task / "xlmr_serverless").rglob("*.py"))
    assert {"runtime", "aws_lambda"} <= {p.name for p in (task / "xlmr_serverless").iterdir()}
    assert modules and all(Path(importlib.util.cache_from_source(str(m))).is_file()
                           for m in modules)
    shutil.copytree(embed_bundle, opt / "bundle")
    # -S: no site hooks (the checkout's editable install stays out); the deps from this venv
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(task), *site.getsitepackages()]),
           "TMPDIR": str(tmp_path / "sandbox-tmp")}
    (tmp_path / "sandbox-tmp").mkdir()
    built = subprocess.run([sys.executable, "-S", "-m", "xlmr_serverless.runtime.verify",
                            str(opt / "bundle")], cwd=task, env=env, capture_output=True,
                           text=True)
    assert built.returncode == 0, built.stderr
    code = ("import json, sys; from xlmr_serverless.runtime import load; "
            "p = load(sys.argv[1]); import xlmr_serverless as x; "
            "print(json.dumps([x.__file__, p.bundle.timings]))")
    ran = subprocess.run([sys.executable, "-S", "-c", code, str(opt / "bundle")], cwd=task,
                         env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    where, timings = json.loads(ran.stdout.strip().splitlines()[-1])
    assert Path(where).is_relative_to(task) and "verify_marker" in timings
    assert not (tmp_path / "sandbox-tmp" / "xlmr-verified").exists()  # nothing hashed here


def _snap_start(bundle: Path, handler_path: str, events: list[dict]) -> tuple[Any, Any, str]:
    """awslambdaric in SnapStart mode on a fake Runtime API: (api, exit code, output)."""
    from tests.runtime_api import RuntimeApi

    api = RuntimeApi(events)
    env = {**os.environ, "AWS_LAMBDA_RUNTIME_API": api.address, "XLMR_BUNDLE_DIR": str(bundle),
           "AWS_LAMBDA_FUNCTION_NAME": "xlmr", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048",
           "POWERTOOLS_METRICS_NAMESPACE": "test", "PYTHONPATH": str(ROOT),
           "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start"}
    proc = subprocess.Popen([sys.executable, "-m", "awslambdaric", handler_path], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not (
                api.done.is_set() and len(api.responses) >= len(events)):
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.terminate()
        out = proc.communicate(timeout=10)[0]
    api.close()
    return api, proc.returncode, out


def test_snapstart_lifecycle_under_awslambdaric(embed_bundle, handlers):
    """The way Lambda runs a SnapStart function: init, the before-snapshot hook (the bundle
    warmed), GET /runtime/restore/next (the snapshot, then the restore), the after-restore
    hook, then invocations, answered as without SnapStart."""
    pytest.importorskip("awslambdaric")
    embed = rest_event("POST", "/embed", json.dumps({"inputs": ["héllo", "wörld"]}))
    api, _, out = _snap_start(embed_bundle, "xlmr_serverless.aws_lambda.handler.handler",
                              [dict(embed, _id="r1"), dict(http_event("GET", "/health", None),
                                                           _id="r2")])
    assert not api.errors, api.errors
    restore = api.calls.index("GET /2018-06-01/runtime/restore/next")
    first_next = next(i for i, c in enumerate(api.calls) if c.endswith("/invocation/next"))
    assert restore < first_next  # the snapshot came before any request
    logs = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    messages = [x.get("message") for x in logs]
    assert messages.index("bundle loaded") < messages.index("snapshot ready") \
        < messages.index("restored from snapshot") < messages.index("first request")
    ready = next(x for x in logs if x.get("message") == "snapshot ready")
    assert set(ready["warm_up_ms"]) == {"8", "64", "256"}  # a forward pass per length
    assert ready["sample_status"] == 200  # and the task's sample through the whole handler
    assert ready["memory_mb"]["released"]["rss"] > 0 and ready["released_by"] != "none"
    answered = [x for x in logs if x.get("message") == "answered"]
    assert len(answered) == 2  # the rehearsal, then the request (/health logs no answer)
    emf = [x for x in logs if "_aws" in x and "LatencyMs" in x]
    assert len(emf) == 1 and len(emf[0]["LatencyMs"]) == 1  # r1 alone, not the rehearsal
    first = next(x for x in logs if x.get("message") == "first request")
    assert first["ms_since_restore"] >= 0  # the first request knows it followed a restore
    assert json.loads(api.responses["r1"]["body"]) == call(handlers("feature-extraction"),
                                                           embed)[1]
    assert api.responses["r2"]["statusCode"] == 200


def test_a_bundle_that_fails_to_load_fails_the_publish(tmp_path):
    """Under SnapStart a load failure is a before-snapshot error: reported as an init error
    (the version's publish fails) and no snapshot is taken, rather than a snapshot of a
    function that answers 503 to every request."""
    pytest.importorskip("awslambdaric")
    api, code, out = _snap_start(tmp_path / "no-bundle-here", "xlmr_serverless.aws_lambda.handler.handler",
                                 [dict(http_event("GET", "/health", None), _id="r1")])
    assert code == 64, out[-2000:]  # awslambdaric's exit after a before-snapshot error
    posted = [e for e in api.errors if e["path"].endswith("/runtime/init/error")]
    assert posted and "model unavailable" in posted[0]["body"]
    assert not any(c.endswith("/restore/next") for c in api.calls)  # no snapshot
    assert not api.responses


def test_an_after_restore_failure_is_reported_not_swallowed(embed_bundle):
    pytest.importorskip("awslambdaric")
    api, code, out = _snap_start(embed_bundle, "tests.failing_restore.handler",
                                 [dict(http_event("GET", "/health", None), _id="r1")])
    assert code == 65, out[-2000:]  # awslambdaric's exit after reporting a restore error
    posted = [e for e in api.errors if e["path"].endswith("/runtime/restore/error")]
    assert posted and "planted after-restore failure" in posted[0]["body"]
    assert not api.responses  # no request was answered by the failed copy


@pytest.mark.serving
@needs_bundles
def test_a_lone_surrogate_is_never_echoed_raw(handlers):
    """A parameter value holding a lone surrogate (JSON can carry one, UTF-8 cannot) comes back
    escaped in the 422, so the answer still encodes as UTF-8 (the runtime sends it so)."""
    from xlmr_serverless.aws_lambda.local import LocalContext

    res = handlers("fill-mask")({"inputs": "a <mask>", "parameters": {"top_k": "\ud800"}},
                                LocalContext())
    assert res["statusCode"] == 422 and "\\ud800" in res["error"]
    json.dumps(res, ensure_ascii=False).encode("utf-8")
