"""The one adapter from an HTTP request to a Lambda event and back: a WSGI app over the same
handler Lambda runs, so routes, schema and errors are identical everywhere. `xlmr serve`
runs it under the standard library's server; the GPU image under waitress
(`waitress-serve --call xlmr_serverless.aws_lambda.wsgi:create_app`)."""
from __future__ import annotations

import base64
import json
import uuid
from http import HTTPStatus
from typing import Any, Callable, Iterable

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


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


def request_event(environ: dict[str, Any]) -> dict[str, Any]:
    """The WSGI request as an HTTP API event; a Content-Length that is not a non-negative
    number is a ValueError (the app answers 400)."""
    size = int(environ.get("CONTENT_LENGTH") or 0)
    if size < 0:
        raise ValueError(f"Content-Length {size}")
    raw = environ["wsgi.input"].read(size) if size else b""
    headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
               if k.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    return http_event(environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/",
                      raw.decode("utf-8", "replace") if raw else None, headers,
                      environ.get("QUERY_STRING", ""))


def wsgi_app(handler: Callable[[dict[str, Any], Any], Any]) -> WsgiApp:
    """A WSGI callable answering every request through `handler` (a Lambda handler)."""
    from .local import LocalContext

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            event = request_event(environ)
        except ValueError:
            data = json.dumps({"error": "Content-Length must be a non-negative number",
                               "type": "bad_request", "error_type": "bad_request"}).encode()
            start_response("400 Bad Request", [("Content-Type", "application/json"),
                                               ("Content-Length", str(len(data)))])
            return [data]
        res = handler(event, LocalContext())
        body = res.get("body") or ""
        data = base64.b64decode(body) if res.get("isBase64Encoded") else body.encode()
        status = int(res.get("statusCode", 200))
        headers = {**(res.get("headers") or {}),
                   **{k: ", ".join(v) for k, v in (res.get("multiValueHeaders") or {}).items()}}
        reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        start_response(f"{status} {reason}".strip(),
                       list(headers.items()) + [("Content-Length", str(len(data)))])
        return [data]

    return app


def create_app() -> WsgiApp:
    """The GPU image's app: the bundle and settings from the environment, as on Lambda."""
    from .app import make_handler
    from .config import Settings

    return wsgi_app(make_handler(Settings.from_env()))
