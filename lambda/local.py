"""Local runs without Docker: `xlmr invoke` (as `sam local invoke -e`) and `xlmr serve` (as
`sam local start-api`), both through the same handler code as the image."""
from __future__ import annotations

import dataclasses
import json
import uuid
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


def sample_event(bundle: str | Path, text: str | None = None) -> dict[str, Any]:
    """A POST event fit for the bundle's task: its first route's sample from the route table
    (/embed for embeddings), else the task spec's /predict sample (`text` replaces a text
    input)."""
    from ..runtime.tasks import task_spec
    from .routes import route
    from .wsgi import http_event

    spec = task_spec(json.loads((Path(bundle) / "manifest.json").read_text())["task"])
    extra = next((r for r in (route("POST", p) for p in spec.routes) if r and r.sample), None)
    path, body = (extra.path, dict(extra.sample or {})) if extra else ("/predict", dict(spec.sample))
    if text is not None and isinstance(body.get("inputs"), str) and "<mask>" not in body["inputs"]:
        body["inputs"] = text
    elif text is not None and isinstance(body.get("inputs"), list) and path == "/embed":
        body["inputs"] = [text]
    return http_event("POST", path, json.dumps(body, ensure_ascii=False),
                      {"Content-Type": "application/json"})


def http_server(bundle: str | Path, host: str = "127.0.0.1", port: int = 3000) -> Any:
    """A threading HTTP server answering through the same WSGI adapter as the GPU image (not
    yet serving: call serve_forever)."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from .wsgi import wsgi_app

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        request_queue_size = 128  # listen backlog: bursts of clients queue, never reset

    class Quiet(WSGIRequestHandler):
        def log_message(self, fmt: str, *args: Any) -> None:
            pass

    handler = local_handler(bundle)
    return make_server(host, port, wsgi_app(handler, handler.settings.max_body_bytes), Server,
                       Quiet)


def serve(bundle: str | Path, host: str = "127.0.0.1", port: int = 3000) -> None:
    """Real HTTP on `host:port`, as `sam local start-api` gives it."""
    server = http_server(bundle, host, port)
    print(f"serving {bundle} on http://{host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
