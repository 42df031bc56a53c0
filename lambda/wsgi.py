"""The one adapter from an HTTP request to a Lambda event and back: a WSGI app over the same
handler Lambda runs, so routes, schema and errors are identical everywhere. `xlmr serve`
runs it under the standard library's server; the GPU image under waitress
(`waitress-serve --call xlmr_serverless.aws_lambda.wsgi:create_app`)."""
from __future__ import annotations

import base64
import dataclasses
import uuid
from http import HTTPStatus
from typing import Any, Callable, Iterable

from .errors import FATAL, HttpError, error_body, error_response

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclasses.dataclass
class LocalContext:
    """The LambdaContext fields the handler and Powertools read, for calls made here."""

    function_name: str = "xlmr-local"
    memory_limit_in_mb: int = 2048
    invoked_function_arn: str = "arn:aws:lambda:local:000000000000:function:xlmr-local"
    aws_request_id: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000


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


def request_event(environ: dict[str, Any], max_body_bytes: int | None = None) -> dict[str, Any]:
    """The WSGI request as an HTTP API event. A body that is not UTF-8 travels base64-encoded,
    as API Gateway sends a binary body, so the handler answers it as on Lambda (400). An
    HttpError for a Content-Length that is not a non-negative number (400) or that is over
    `max_body_bytes` (413): refused before the body is read."""
    try:
        size = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        size = -1
    if size < 0:
        raise HttpError(400, "bad_request", "Content-Length must be a non-negative number")
    if max_body_bytes is not None and size > max_body_bytes:
        raise HttpError(413, "payload_too_large", f"body must be at most {max_body_bytes} bytes")
    raw = environ["wsgi.input"].read(size) if size else b""
    headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
               if k.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    try:
        body, binary = (raw.decode("utf-8") if raw else None), False
    except UnicodeDecodeError:
        body, binary = base64.b64encode(raw).decode("ascii"), True
    event = http_event(environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/", body, headers,
                       environ.get("QUERY_STRING", ""))
    event["isBase64Encoded"] = binary
    return event


def wsgi_app(handler: Callable[[dict[str, Any], Any], Any],
             max_body_bytes: int | None = None) -> WsgiApp:
    """A WSGI callable answering every request through `handler` (a Lambda handler); a body
    over `max_body_bytes` is refused unread. Nothing a request does escapes it: a failure
    the handler did not answer is a 500 with the request id, and the server serves on."""
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        context = LocalContext()
        try:
            res = handler(request_event(environ, max_body_bytes), context)
        except HttpError as exc:
            res = error_result(exc, context.aws_request_id)
        except FATAL:
            raise
        except BaseException as exc:
            res = error_result(exc, context.aws_request_id)
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


def error_result(exc: BaseException, request_id: str) -> dict[str, Any]:
    """A proxy response for an error met before (or outside) the handler."""
    return error_response(*error_body(exc, request_id))


def threaded_server(app: WsgiApp, host: str, port: int) -> Any:
    """The standard library's HTTP server over `app`, a thread per connection and a deep
    listen backlog (bursts of clients queue, never reset); not yet serving: call
    serve_forever. The handler answers one request at a time."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        request_queue_size = 128

    class Quiet(WSGIRequestHandler):
        def log_message(self, fmt: str, *args: Any) -> None:
            pass

    return make_server(host, port, app, Server, Quiet)


def create_app() -> WsgiApp:
    """The GPU image's app: the bundle and settings from the environment, as on Lambda."""
    from .app import make_handler
    from .config import Settings

    settings = Settings.from_env()
    return wsgi_app(make_handler(settings), settings.max_body_bytes)
