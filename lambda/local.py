"""Local runs without Docker: `xlmr invoke` (as `sam local invoke -e`) and `xlmr serve` (as
`sam local start-api`), both through the same handler code as the image."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .app import Handler, make_handler
from .config import Settings
from .routes import sample_request
from .wsgi import LocalContext, http_event, threaded_server, wsgi_app

__all__ = ["LocalContext", "invoke_event", "local_handler", "sample_event", "serve"]


_HANDLERS: dict[str, Handler] = {}


def local_handler(bundle: str | Path) -> Handler:
    """The Handler for `bundle`, built once per process (as a warm container)."""
    key = str(Path(bundle).resolve())
    if key not in _HANDLERS:
        settings = dataclasses.replace(Settings.from_env(), bundle_dir=Path(bundle),
                                       model_s3_uri=None, verify=True)
        _HANDLERS[key] = make_handler(settings)
    return _HANDLERS[key]


def invoke_event(bundle: str | Path, event: dict[str, Any]) -> Any:
    return local_handler(bundle)(event, LocalContext())


def sample_event(bundle: str | Path, text: str | None = None) -> dict[str, Any]:
    """A POST event fit for the bundle's task (routes.sample_request); `text` replaces its
    text input."""
    task = json.loads((Path(bundle) / "manifest.json").read_text())["task"]
    path, body = sample_request(task)
    if text is not None and isinstance(body.get("inputs"), str) and "<mask>" not in body["inputs"]:
        body["inputs"] = text
    elif text is not None and isinstance(body.get("inputs"), list) and path == "/embed":
        body["inputs"] = [text]
    return http_event("POST", path, json.dumps(body, ensure_ascii=False),
                      {"Content-Type": "application/json"})


def http_server(bundle: str | Path, host: str = "127.0.0.1", port: int = 3000) -> Any:
    """A threading HTTP server answering through the same WSGI adapter as the GPU image (not
    yet serving: call serve_forever)."""
    handler = local_handler(bundle)
    return threaded_server(wsgi_app(handler, handler.settings.max_body_bytes), host, port)


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
