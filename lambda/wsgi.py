"""WSGI app for the GPU image: each HTTP request becomes an HTTP API event for the same
handler code Lambda runs, so routes, schema and errors are identical on both."""
from __future__ import annotations

import base64
from typing import Any, Callable, Iterable

from .app import make_handler
from .config import Settings
from .local import LocalContext, http_event

_handler = make_handler(Settings.from_env())


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    size = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(size) if size else b""
    headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
               if k.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    event = http_event(environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/"),
                       raw.decode("utf-8", "replace") if raw else None, headers,
                       environ.get("QUERY_STRING", ""))
    res = _handler(event, LocalContext())
    body = res.get("body") or ""
    data = base64.b64decode(body) if res.get("isBase64Encoded") else body.encode()
    status = res.get("statusCode", 200)
    start_response(f"{status} {'OK' if status < 400 else 'Error'}",
                   list((res.get("headers") or {}).items()) + [("Content-Length", str(len(data)))])
    return [data]
