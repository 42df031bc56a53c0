"""Local runs without Docker: `xlmr invoke` (as `sam local invoke -e`) and `xlmr serve` (as
`sam local start-api`), both through the same handler code as the image."""
from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .config import Settings


@dataclasses.dataclass
class LocalContext:
    """The LambdaContext fields the handler and Powertools read."""

    function_name: str = "xlmr-local"
    memory_limit_in_mb: int = 2048
    invoked_function_arn: str = "arn:aws:lambda:local:000000000000:function:xlmr-local"
    aws_request_id: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000


_HANDLERS: dict[str, Any] = {}


def local_handler(bundle: str | Path) -> Any:
    """The Handler for `bundle`, built once per process (as a warm container)."""
    from .app import make_handler

    key = str(Path(bundle).resolve())
    if key not in _HANDLERS:
        settings = dataclasses.replace(Settings.from_env(), bundle_dir=Path(bundle),
                                       model_s3_uri=None, verify=True)
        _HANDLERS[key] = make_handler(settings)
    return _HANDLERS[key]


def invoke_event(bundle: str | Path, event: dict[str, Any]) -> Any:
    return local_handler(bundle)(event, LocalContext())


def http_event(method: str, path: str, body: str | None, headers: dict[str, str],
               query: str = "") -> dict[str, Any]:
    """An HTTP API (payload 2.0) event, as API Gateway sends it."""
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query,
        "headers": {k.lower(): v for k, v in headers.items()}, "body": body,
        "isBase64Encoded": False,
        "requestContext": {"accountId": "000000000000", "apiId": "local", "domainName": "localhost",
                           "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                                    "sourceIp": "127.0.0.1", "userAgent": "local"},
                           "requestId": str(uuid.uuid4()), "routeKey": "$default",
                           "stage": "$default"},
    }


SAMPLE_INPUTS: dict[str, dict[str, Any]] = {
    "fill-mask": {"inputs": "Paris is the <mask> of France."},
    "question-answering": {"inputs": {"question": "Where do I live?",
                                      "context": "My name is Wolfgang and I live in Berlin."}},
    "zero-shot-classification": {"inputs": "The new budget was approved by parliament.",
                                 "parameters": {"candidate_labels": ["politics", "sport"]}},
    "multiple-choice": {"inputs": {"prompt": "Where is the Eiffel tower?",
                                   "choices": ["In Paris.", "In Rome."]}},
}


def sample_event(bundle: str | Path, text: str) -> dict[str, Any]:
    """A POST event fit for the bundle's task: /embed for embeddings, /predict otherwise."""
    task = json.loads((Path(bundle) / "manifest.json").read_text())["task"]
    if task == "feature-extraction":
        return http_event("POST", "/embed", json.dumps({"inputs": [text]}),
                          {"Content-Type": "application/json"})
    body = SAMPLE_INPUTS.get(task, {"inputs": text})
    return http_event("POST", "/predict", json.dumps(body, ensure_ascii=False),
                      {"Content-Type": "application/json"})


def serve(bundle: str | Path, host: str = "127.0.0.1", port: int = 3000) -> None:
    """Real HTTP on `host:port`, each request turned into an HTTP API event for the handler."""
    handler = local_handler(bundle)

    class Proxy(BaseHTTPRequestHandler):
        def _any(self) -> None:
            size = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(size) if size else b""
            path, _, query = self.path.partition("?")
            event = http_event(self.command, path, raw.decode("utf-8", "replace") if raw else None,
                               dict(self.headers), query)
            res = handler(event, LocalContext())
            body = res.get("body") or ""
            data = base64.b64decode(body) if res.get("isBase64Encoded") else body.encode()
            self.send_response(res.get("statusCode", 200))
            for k, v in (res.get("headers") or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_OPTIONS = _any

        def log_message(self, fmt: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Proxy)
    print(f"serving {bundle} on http://{host}:{server.server_port}")
    try:
        server.serve_forever()
    finally:
        server.server_close()
