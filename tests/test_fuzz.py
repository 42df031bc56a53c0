"""Property-based fuzzing of the handler (hypothesis; bounded, derandomized): events of every
shape, arbitrary JSON bodies and arbitrary parameters for every task, seeded with the hostile
requests of tests/hostile.py. Whatever arrives, the handler returns a response (never raises),
never a 5xx, never runs more tokens than the budget, and each answer passes the cost oracle
(tests/oracle.py: wall time and peak RSS growth within bounds, never over the response
limit); the next valid request still gets the right answer."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from tests.conftest import needs_bundles

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.hostile import CASES  # noqa: E402
from tests.oracle import RESPONSE_LIMIT, measured, response_size  # noqa: E402
from xlmr_serverless.runtime.tasks import names  # noqa: E402

pytestmark = [needs_bundles, pytest.mark.serving]

TASKS = tuple(names())  # every task the registry has
MAX_TOKENS = 600

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=40) | st.sampled_from(["<mask>", "a <mask> b", "{}", "{:>9}", "\ud800"]),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=5),
    max_leaves=12)


plausible = st.integers(1, 6) | st.booleans() | st.none() | st.sampled_from(
    ["simple", "first", "max", "none", "softmax", "sigmoid", "longest_first", "only_second",
     "This text is about {}.", "cls", "mean", "politics, sport"]) | st.lists(
    st.sampled_from(["politics", "sport", "O", "a"]), min_size=1, max_size=3)


def events(paths: list[str], param_names: list[str], sample: dict[str, Any]) -> st.SearchStrategy[Any]:
    """HTTP API, REST and direct events, well-formed or not, with arbitrary bodies; and, as
    often, the task's own sample request with arbitrary parameters (to reach the model)."""
    params = st.dictionaries(st.sampled_from(param_names), json_values | plausible, max_size=4)
    inputs = json_values | st.text(max_size=200) | st.lists(st.text(max_size=60), max_size=8)
    body_obj = st.fixed_dictionaries({"inputs": inputs}, optional={
        "parameters": params, "truncate": json_values, "query": json_values,
        "texts": inputs, "input": inputs, "normalize": json_values})
    bodies = st.one_of(body_obj.map(json.dumps), json_values.map(json.dumps), st.text(max_size=80),
                       st.none())
    methods = st.sampled_from(["GET", "POST", "PUT", "OPTIONS", "DELETE"])
    path = st.sampled_from(paths) | st.text(max_size=20)

    def http(method: str, p: str, body: Any, b64: bool) -> dict[str, Any]:
        return {"version": "2.0", "rawPath": p, "body": body, "isBase64Encoded": b64,
                "headers": {"content-type": "application/json"},
                "requestContext": {"http": {"method": method, "path": p}, "stage": "$default",
                                   "requestId": "fuzz",
                                   "domainName": "x.execute-api.us-east-1.amazonaws.com"}}

    def rest(method: str, p: str, body: Any, b64: bool) -> dict[str, Any]:
        return {"httpMethod": method, "path": p, "body": body, "isBase64Encoded": b64,
                "headers": {"Content-Type": "application/json"}, "resource": p,
                "requestContext": {"httpMethod": method, "path": p, "stage": "prod"}}

    shaped = st.builds(http, methods, path, bodies, st.booleans()) | \
        st.builds(rest, methods, path, bodies, st.booleans())
    # a well-shaped event with one part replaced by anything
    damaged = st.builds(lambda ev, key, value: {**ev, key: value}, shaped, st.sampled_from(
        ["headers", "body", "isBase64Encoded", "queryStringParameters", "multiValueHeaders",
         "requestContext", "rawPath", "path", "cookies", "rawQueryString"]), json_values)
    near_valid_body = st.builds(
        lambda inputs, p: json.dumps({"inputs": inputs, "parameters": p}),
        st.just(sample["inputs"]) | st.lists(st.just(sample["inputs"]), min_size=1, max_size=3)
        | st.text(min_size=1, max_size=30),
        st.fixed_dictionaries({k: st.just(v) for k, v in sample.get("parameters", {}).items()},
                              optional={k: plausible for k in param_names
                                        if k not in sample.get("parameters", {})}))
    near_valid = st.builds(http, st.just("POST"), st.just("/predict"), near_valid_body,
                           st.just(False))
    broken = st.dictionaries(st.sampled_from(["version", "httpMethod", "path", "rawPath",
                                              "requestContext", "body", "inputs"]),
                             json_values, max_size=5)
    direct = st.fixed_dictionaries({"inputs": inputs}, optional={"parameters": params})
    return st.one_of(near_valid, near_valid, near_valid, shaped, damaged, broken, direct,
                     json_values)


@pytest.fixture(scope="module")
def handlers(bundle_factory):
    from xlmr_serverless.aws_lambda.app import make_handler
    from xlmr_serverless.aws_lambda.config import Settings

    return {t: make_handler(dataclasses.replace(Settings.from_env({"XLMR_MAX_TOKENS": str(MAX_TOKENS)}),
                                                bundle_dir=bundle_factory(t))) for t in TASKS}


@pytest.mark.parametrize("task", TASKS)
def test_no_event_takes_the_handler_down(handlers, task):
    from xlmr_serverless.aws_lambda.local import LocalContext
    from xlmr_serverless.aws_lambda.routes import ROUTES
    from xlmr_serverless.aws_lambda.wsgi import http_event
    from xlmr_serverless.runtime.tasks import task_spec

    handler = handlers[task]
    pipe = handler.service.pipe
    ran: list[int] = []
    statuses: list[int] = []
    real_run = pipe.bundle.run

    def counting_run(ids: Any, mask: Any) -> Any:
        ran.append(int(mask.sum()))
        return real_run(ids, mask)

    sample = task_spec(task).sample
    valid = http_event("POST", "/predict", json.dumps(sample), {"content-type": "application/json"})
    expect = handler(valid, LocalContext())
    assert expect["statusCode"] == 200

    @given(event=events(sorted({r.path for r in ROUTES}), sorted(pipe.parameters), dict(sample)))
    @settings(max_examples=100, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def holds(event: Any) -> None:
        ran.clear()
        res, cost = measured(lambda: handler(event, LocalContext()))
        assert cost.within_bounds(), (cost, str(event)[:300])
        assert response_size(res) <= RESPONSE_LIMIT
        assert isinstance(res, (dict, list)), res
        status = res.get("statusCode", 200) if isinstance(res, dict) else 200
        statuses.append(status)
        if isinstance(res, dict) and "statusCode" in res:
            assert res["statusCode"] < 500, res
            if "body" in res and res["body"]:
                json.loads(res["body"])
        assert sum(ran) <= MAX_TOKENS, (sum(ran), event)

    for c in CASES:  # the hostile requests first, for this task's bundle and every other's
        holds = example(event=http_event("POST", c.route, c.body, {}))(holds)
    pipe.bundle.run = counting_run  # type: ignore[method-assign]
    try:
        holds()
    finally:
        pipe.bundle.run = real_run  # type: ignore[method-assign]
    # the events reached the model as well as the checks in front of it
    assert 200 in statuses and {400, 404, 405, 413, 422} & set(statuses), sorted(set(statuses))
    assert statuses.count(200) >= 1, sorted(set(statuses))
    after = handler(valid, LocalContext())
    assert after["statusCode"] == 200 and after["body"] == expect["body"]
