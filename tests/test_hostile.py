"""Bounded by construction: every request in tests/hostile.py (the ones that once killed the
process, cost seconds and gigabytes, answered 500 or over 6 MB) is answered with a clear
status within the cost oracle's bounds, and the same process answers the next request as
before; a failure that passes every `except Exception` (a native panic) is a 500 with the
request id through the handler, awslambdaric and `xlmr serve`, and the process serves on."""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from tests.conftest import ROOT, needs_bundles
from tests.hostile import CASES, tasks
from tests.oracle import RESPONSE_LIMIT, measured, response_size
from tests.test_lambda import free_port, wait_for_server

pytestmark = [needs_bundles, pytest.mark.serving]


@pytest.fixture(scope="module")
def handlers(bundle_factory):
    """One handler per task with the deployed defaults (Settings from an empty environment),
    and the answer it gives its task's sample request."""
    from xlmr_serverless.aws_lambda.app import make_handler
    from xlmr_serverless.aws_lambda.config import Settings

    built = {}
    for task in tasks():
        h = make_handler(dataclasses.replace(Settings.from_env({}),
                                             bundle_dir=bundle_factory(task)))
        built[task] = (h, answer_of(send(h, sample_event(task))))
    return built


def sample_event(task: str) -> dict:
    from xlmr_serverless.aws_lambda.wsgi import http_event
    from xlmr_serverless.runtime.tasks import task_spec

    return http_event("POST", "/predict", json.dumps(dict(task_spec(task).sample)),
                      {"content-type": "application/json"})


def answer_of(res: dict) -> tuple:
    """A response's status and body (its timing headers differ from call to call)."""
    return res["statusCode"], res["body"]


def send(handler, event, request_id: str = "req-hostile"):
    from xlmr_serverless.aws_lambda.local import LocalContext

    return handler(event, LocalContext(aws_request_id=request_id))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_requests_are_answered_within_bounds(handlers, case):
    from xlmr_serverless.aws_lambda.wsgi import http_event

    handler, expected = handlers[case.task]
    event = http_event("POST", case.route, case.body, {"content-type": "application/json"})
    res, cost = measured(lambda: send(handler, event))
    assert res["statusCode"] in case.expect, res["body"][:400]
    assert cost.within_bounds(), cost
    assert response_size(res) <= RESPONSE_LIMIT
    if res["statusCode"] != 200:  # a clear error: its type, and no internals
        body = json.loads(res["body"])
        assert body["type"] and "Traceback" not in body["error"]
    assert answer_of(send(handler, sample_event(case.task))) == expected  # it serves on


def test_every_route_has_a_budget(handlers):
    """/tokenize, which runs no model, is bounded too: characters first, then its answer."""
    from xlmr_serverless.aws_lambda.wsgi import http_event

    handler, _ = handlers["feature-extraction"]
    for body, limit in (({"inputs": "a " * 150_000}, "max_input_chars"),
                        ({"inputs": ["a " * 30_000] * 3}, "max_response_bytes")):
        res = send(handler, http_event("POST", "/tokenize", json.dumps(body), {}))
        assert res["statusCode"] == 413 and limit in res["body"], res["body"][:300]
    ok = send(handler, http_event("POST", "/tokenize", json.dumps({"inputs": "a b"}), {}))
    assert ok["statusCode"] == 200 and len(json.loads(ok["body"])[0]) == 4


def test_integer_parameters_arrive_as_integers(bundle_factory):
    """The schema takes 2.0 for an integer; the pipeline gets 2 (the schema's declaration),
    and every numeric parameter is bounded in the published document."""
    from xlmr_serverless.runtime import load
    from xlmr_serverless.runtime.parameters import as_declared
    from xlmr_serverless.runtime.tasks import specs

    pipe = load(bundle_factory("fill-mask"))
    assert pipe("Paris is the <mask>.", top_k=2.0) == pipe("Paris is the <mask>.", top_k=2)
    kwargs = specs()["feature-extraction"].parameters["tokenize_kwargs"]
    assert as_declared(kwargs, {"max_length": 4.0, "truncation": True}) == \
        {"max_length": 4, "truncation": True}
    assert type(as_declared(kwargs, {"max_length": 4.0})["max_length"]) is int

    def numbers(schema):
        if isinstance(schema, dict):
            kind = schema.get("type")
            kinds = kind if isinstance(kind, list) else [kind]
            if "integer" in kinds or "number" in kinds:
                yield schema
            for value in schema.values():
                yield from numbers(value)
        elif isinstance(schema, list):
            for value in schema:
                yield from numbers(value)

    found = [s for spec in specs().values() for s in numbers(dict(spec.parameters))]
    assert found and all("maximum" in s and "minimum" in s for s in found), found


def test_a_native_panic_is_a_500_and_the_handler_serves_on(handlers, monkeypatch, capfd):
    from tests.panicking import PANIC
    from xlmr_serverless.aws_lambda.service import Service
    from xlmr_serverless.aws_lambda.wsgi import http_event

    assert not isinstance(PANIC, Exception)  # what `except Exception` never catches
    monkeypatch.setattr(Service, "answer", lambda self, route, body: (_ for _ in ()).throw(PANIC))
    handler, expected = handlers["token-classification"]
    res = send(handler, http_event("POST", "/predict", json.dumps({"inputs": "x"}), {}), "req-9")
    body = json.loads(res["body"])
    assert res["statusCode"] == 500 and "req-9" in body["error"]
    assert body["type"] == "internal_error" and "stride" not in body["error"]
    direct = send(handler, {"inputs": "x"}, "req-10")
    assert direct["statusCode"] == 500 and "req-10" in direct["error"]
    logs = [json.loads(x) for x in capfd.readouterr().out.splitlines() if x.startswith("{")]
    assert any(x.get("error_class") == "PanicException" and x.get("request_id") == "req-9"
               for x in logs)
    monkeypatch.undo()
    assert answer_of(send(handler, sample_event("token-classification"))) == expected


def test_a_native_panic_under_awslambdaric_is_answered_and_the_process_lives(bundle_factory):
    """The image's CMD on the emulated Runtime API, with a planted panic (tests/panicking.py):
    the panicking request is a 500, the same process answers the next events, and nothing
    reaches the Runtime API's error path (which would end the environment)."""
    pytest.importorskip("awslambdaric")
    from tests.runtime_api import RuntimeApi
    from xlmr_serverless.aws_lambda.wsgi import http_event

    bundle = bundle_factory("feature-extraction")
    events = [dict(http_event("POST", "/predict", json.dumps({"inputs": "PANIC"}), {}), _id="p1"),
              dict(http_event("POST", "/embed", json.dumps({"inputs": "hello"}), {}), _id="p2"),
              dict({"inputs": "PANIC"}, _id="p3"),
              dict(http_event("GET", "/health", None, {}), _id="p4")]
    api = RuntimeApi(events)
    env = {**os.environ, "AWS_LAMBDA_RUNTIME_API": api.address, "XLMR_BUNDLE_DIR": str(bundle),
           "AWS_LAMBDA_FUNCTION_NAME": "xlmr", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048",
           "POWERTOOLS_METRICS_NAMESPACE": "test", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "awslambdaric", "tests.panicking.handler"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT)
    try:
        assert api.done.wait(120), f"the runtime client stopped: {proc.poll()}"
        deadline = time.time() + 30
        while len(api.responses) < 4 and time.time() < deadline:
            time.sleep(0.1)
        alive = proc.poll() is None
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
    assert alive, out[-2000:]
    assert not api.errors, api.errors
    assert api.responses["p1"]["statusCode"] == 500
    assert "p1" in json.loads(api.responses["p1"]["body"])["error"]
    assert api.responses["p2"]["statusCode"] == 200
    assert len(json.loads(api.responses["p2"]["body"])[0]) == 32
    assert api.responses["p3"]["statusCode"] == 500
    assert api.responses["p4"]["statusCode"] == 200


def post(url: str, data: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_native_panic_under_xlmr_serve_is_answered_and_the_server_lives(bundle_factory):
    bundle = bundle_factory("feature-extraction")
    port = free_port()
    code = ("import sys, tests.panicking; from xlmr_serverless.cli import main; "
            f"sys.exit(main(['serve', '--bundle', {str(bundle)!r}, '--port', '{port}']))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(url)
        status, body = post(url + "/predict", json.dumps({"inputs": "PANIC"}).encode())
        assert status == 500 and body["type"] == "internal_error"
        status, body = post(url + "/embed", json.dumps({"inputs": "hello"}).encode())
        assert status == 200 and len(body[0]) == 32
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def raw_http(port: int, head: str, body: bytes = b"") -> tuple[bytes, dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head.encode() + body)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    first, _, payload = reply.partition(b"\r\n\r\n")
    return first.split()[1], json.loads(payload)


def test_the_wsgi_adapter_refuses_what_the_lambda_path_refuses(bundle_factory):
    """Served by `xlmr serve`'s server (and the GPU image's adapter): a body that is not UTF-8
    is a 400, as on Lambda (never a 200 for another text), and a declared Content-Length
    over the limit is a 413 before the body is read (none is sent here: reading would hang)."""
    from xlmr_serverless.aws_lambda.local import http_server

    srv = http_server(bundle_factory("feature-extraction"), "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_port
    try:
        data = b'{"inputs": "caf\xe9"}'  # Latin-1, not UTF-8
        status, body = raw_http(port, f"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                      f"application/json\r\nContent-Length: {len(data)}\r\n"
                                      "Connection: close\r\n\r\n", data)
        assert status == b"400" and body["type"] == "bad_body", body
        t0 = time.perf_counter()
        status, body = raw_http(port, "POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                      "application/json\r\nContent-Length: 200000000\r\n"
                                      "Connection: close\r\n\r\n")
        assert status == b"413" and body["type"] == "payload_too_large", body
        assert time.perf_counter() - t0 < 10
        status, body = post(f"http://127.0.0.1:{port}/embed", b'{"inputs": "caf\xc3\xa9"}')
        assert status == 200  # the same text in UTF-8
    finally:
        srv.shutdown()
        srv.server_close()
