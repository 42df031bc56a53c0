"""schemathesis against `xlmr serve`'s server on loopback, driven by the API's own OpenAPI
document: whatever a generated request holds, no 5xx, and every response is documented
(status, content type, body schema). Bounded: a few dozen examples per operation."""
from __future__ import annotations

import threading

import pytest

from tests.conftest import needs_bundles

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402  (schemathesis brings hypothesis)
from schemathesis.specs.openapi import checks  # noqa: E402

pytestmark = [needs_bundles]
# an embedding bundle (/embed, /v1/embeddings) and a cross-encoder one (/rerank, pairs)
TASKS = ("feature-extraction", "text-classification")


@pytest.mark.parametrize("task", TASKS)
def test_api_conforms(bundle_factory, task):
    """Every operation of the document, generated requests that match its schemas and
    requests that break them, through real HTTP."""

    from xlmr_serverless.aws_lambda.local import http_server
    from xlmr_serverless.aws_lambda.routes import ROUTES

    srv = http_server(bundle_factory(task), "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{srv.server_port}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        # (schemathesis leaves out the document's own route)
        assert {(op.method.upper(), op.path) for op in operations} == \
            {(r.method, r.path) for r in ROUTES if r.path != "/openapi.json"}
        seen: dict[str, set[int]] = {}
        modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
        # (a route with no body has no invalid request to generate)
        for op, mode in ((op, mode) for op in operations for mode in modes
                         if op.method.upper() == "POST" or mode == modes[0]):
            exercise(op, mode, seen)
        # the requests really went out, and reached both answers and rejections
        assert len(seen) == len(operations), seen
        answered = {k for k, codes in seen.items() if k.startswith("POST") and 200 in codes}
        rejected = {k for k, codes in seen.items() if codes & {400, 413, 422}}
        assert answered and "POST /predict" in rejected, seen
    finally:
        srv.shutdown()
        srv.server_close()


def exercise(op, mode, seen: dict[str, set[int]]) -> None:
    """Generated requests for one operation: no 5xx, each response as documented."""
    from hypothesis import given

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(max_examples=25, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def conforms(case):
        response = case.call_and_validate(
            checks=[checks.status_code_conformance, checks.content_type_conformance,
                    checks.response_schema_conformance, checks.negative_data_rejection],
            timeout=30)
        assert response.status_code < 500, case.as_curl_command()
        seen.setdefault(f"{op.method.upper()} {op.path}", set()).add(response.status_code)

    conforms()
