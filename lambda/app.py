"""The Lambda application: bundle loading, the routes on Powertools' resolvers, and the event
dispatch for API Gateway REST (payload 1.0), HTTP API (2.0), Function URLs and direct
invocation. handler.py builds it once per container; local.py builds it for a given bundle."""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import (
    APIGatewayHttpResolver,
    APIGatewayRestResolver,
    CORSConfig,
    LambdaFunctionUrlResolver,
    Response,
)
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.metrics import MetricUnit

from ..runtime import OverBudgetError
from ..runtime.usage import Usage
from .config import PREFIX, Settings, lambda_safe_environment
from .errors import FATAL, HttpError, error_body, error_response
from .loading import Loaded, load_pipeline
from .routes import ROUTES, Route, allowed_methods, conventions, route
from .service import Reply, Service, parse_json


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is at the time (Lambda ships stdout to CloudWatch)."""

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


logger = Logger(service="xlmr-serverless", log_uncaught_exceptions=True,
                logger_handler=_StdoutHandler())
metrics = Metrics(namespace="xlmr-serverless", service="xlmr-serverless")


def load_service(settings: Settings, imports_ms: float | None = None,
                 loading: Future[Loaded] | None = None) -> Service:
    """The bundle's pipeline (waiting for `loading` when the handler began it before its own
    imports, else loading it now); a failure is logged once and answered as 503s. The first
    line logged says where the cold start went: imports (`imports_ms`, measured by the
    caller), the S3 download and the bundle's phases (lambda/loading.py)."""
    t0 = time.perf_counter()
    try:
        pipe, load_phases = loading.result() if loading is not None else load_pipeline(settings)
    except FATAL:
        raise
    except BaseException as exc:  # a native panic too: logged with its cause, then 503s
        logger.exception("bundle failed to load", extra={
            "error": str(exc), "waited_ms": round((time.perf_counter() - t0) * 1000, 1)})
        return Service(None, settings.max_inputs, load_error=exc)
    phases = {} if imports_ms is None else {"imports": round(imports_ms, 1)}
    phases.update(load_phases)
    logger.info("bundle loaded", extra={**pipe.describe(), "io_binding": pipe.io_binding,
                                        "load_ms": load_phases.get("load"),
                                        "init_ms": phases})
    return Service(pipe, settings.max_inputs)


def decoded_body(event: Any) -> str | None:
    """The request body as text; a body that is not valid base64 or UTF-8 is a 400."""
    try:
        body: str | None = event.decoded_body
    except (ValueError, UnicodeDecodeError) as exc:  # binascii.Error is a ValueError
        raise HttpError(400, "bad_body", f"body cannot be decoded: {exc}") from exc
    return body


def check_payload(body: str, limit: int) -> None:
    """The answer as Lambda carries it (the body a JSON string inside the response, its
    quotes and backslashes escaped again) within `limit`: the runtime bounded the body
    before running; this holds the envelope to the platform's limit."""
    size = len(body.encode("utf-8")) + body.count('"') + body.count("\\") + 200
    if size > limit:
        raise OverBudgetError(f"the answer is {size / 1e6:.1f} MB as Lambda carries it; the "
                              f"limit is {limit / 1e6:.1f} MB (max_response_bytes)")


def failure(exc: BaseException, request_id: str, event: Any) -> dict[str, Any]:
    """The response to anything that escaped a request (a native library's panic included):
    logged with the request id, answered in the route's convention, the process kept."""
    r = event_route(event)
    status, payload = error_body(exc, request_id, r.errors if r else "hf")
    if status >= 500:
        logger.exception("request failed", extra={"status": status, "request_id": request_id,
                                                  "error_class": type(exc).__name__})
    return error_response(status, payload)


def event_route(event: Any) -> Route | None:
    """The route an API Gateway event asks for, if it is well-formed enough to say."""
    if not isinstance(event, dict):
        return None
    ctx = event.get("requestContext")
    http = ctx.get("http") if isinstance(ctx, dict) else None
    method = event.get("httpMethod") or (http.get("method") if isinstance(http, dict) else None)
    path = event.get("path") or event.get("rawPath")
    return route(method, path) if isinstance(method, str) and isinstance(path, str) else None


def compute_headers(usage: Usage, ms: float, provider: str) -> dict[str, str]:
    """Text Embeddings Inference's response headers: what the answer cost, in whole
    milliseconds, characters and tokens (one request runs at a time: no queue)."""
    return {"x-compute-type": provider, "x-compute-time": str(int(ms)),
            "x-total-time": str(int(ms)), "x-compute-characters": str(usage.chars),
            "x-compute-tokens": str(usage.tokens),
            "x-tokenization-time": str(int(usage.tokenize_ms)), "x-queue-time": "0",
            "x-inference-time": str(int(usage.inference_ms))}


def input_count(request: Any) -> int:
    """How many inputs a request carries, whatever the route's field is called."""
    if not isinstance(request, dict):
        return 1
    value = next((request[k] for k in ("inputs", "input", "texts") if k in request), None)
    return len(value) if isinstance(value, list) else 1


def build_app(service: Service, settings: Settings, resolver_cls: type) -> Any:
    """One resolver with every route of the route table; errors mapped to JSON in one place."""
    cors = CORSConfig(allow_origin=settings.cors_origin) if settings.cors_origin else None
    app = resolver_cls(cors=cors)

    def view(r: Route) -> Callable[[], Response]:
        def answer() -> Response:
            request = parse_json(decoded_body(app.current_event), settings.max_body_bytes) \
                if r.request is not None else None
            t0 = time.perf_counter()
            result, usage = service.answer(r, request)
            status, result = (result.status, result.body) if isinstance(result, Reply) \
                else (200, result)
            headers: dict[str, str] = {}
            if r.needs_model:  # a request the model answered: timed, counted, logged
                ms = (time.perf_counter() - t0) * 1000
                metrics.add_metric(name="LatencyMs", unit=MetricUnit.Milliseconds, value=ms)
                metrics.add_metric(name="Tokens", unit=MetricUnit.Count, value=usage.tokens)
                logger.info("answered", extra={
                    "route": r.path, "latency_ms": round(ms, 2), "tokens": usage.tokens,
                    "inputs": input_count(request), "task": service.task,
                    **({"body": app.current_event.body} if settings.log_inputs else {})})
                headers = compute_headers(usage, ms, service.ready().provider)
            text = json.dumps(result, ensure_ascii=False)
            check_payload(text, settings.max_response_bytes)
            return Response(status, "application/json", text, headers=headers)
        return answer

    for r in ROUTES:
        app.route(r.path, method=r.method)(view(r))

    @app.not_found
    def no_route(exc: NotFoundError) -> Response:
        """404 for an unknown path; 405 with Allow for a known path and another method (an
        OPTIONS request gets 204 and Allow: CORS preflights are answered by Powertools)."""
        method, path = app.current_event.http_method, app.current_event.path
        allowed = allowed_methods(path)
        if allowed and method == "OPTIONS":
            return Response(204, None, "", headers={"Allow": ", ".join(allowed + ["OPTIONS"])})
        if not allowed:
            rejected = HttpError(404, "not_found", f"no route {path}; routes: "
                                              f"{', '.join(sorted({r.path for r in ROUTES}))}")
        else:
            rejected = HttpError(405, "method_not_allowed", f"{method} is not allowed on {path}; "
                                                       f"allowed: {', '.join(allowed)}")
        status, payload = error_body(rejected, "", conventions(path))
        logger.info("request rejected", extra={"status": status, "type": rejected.error_type})
        return Response(status, "application/json", json.dumps(payload),
                        headers={"Allow": ", ".join(allowed + ["OPTIONS"])} if allowed else None)

    @app.exception_handler(Exception)
    def on_error(exc: Exception) -> Response:
        request_id = getattr(app.lambda_context, "aws_request_id", "local")
        r = route(app.current_event.http_method, app.current_event.path)
        status, payload = error_body(exc, request_id, r.errors if r else "hf")
        metrics.add_metric(name="Errors", unit=MetricUnit.Count, value=1)
        if status >= 500:  # the stack and the request id go to the log, never to the caller
            logger.exception("request failed", extra={"status": status, "request_id": request_id,
                                                      "error_class": type(exc).__name__})
        else:
            logger.info("request rejected", extra={"status": status,
                                                   "type": getattr(exc, "error_type", None)})
        return Response(status, "application/json", json.dumps(payload))

    return app


PREDICT = next(r for r in ROUTES if r.path == "/predict")  # direct invocations' route

# the parts of an API Gateway event Powertools reads, and the types they must have
EVENT_FIELDS: dict[str, tuple[type, ...]] = {
    "headers": (dict, type(None)), "multiValueHeaders": (dict, type(None)),
    "queryStringParameters": (dict, type(None)), "multiValueQueryStringParameters":
    (dict, type(None)), "pathParameters": (dict, type(None)), "body": (str, type(None)),
    "isBase64Encoded": (bool, type(None)), "cookies": (list, type(None)),
    "rawQueryString": (str, type(None))}


def event_kind(event: dict[str, Any]) -> str:
    """'rest', 'http', 'url' or 'direct' for a well-formed event; an HttpError (400) for an
    API Gateway event whose parts are missing or of the wrong type (Powertools would raise)."""
    if "httpMethod" in event or "requestContext" in event:
        wrong = [k for k, types in EVENT_FIELDS.items()
                 if k in event and not isinstance(event[k], types)]
        for k in ("headers", "queryStringParameters", "pathParameters"):
            if isinstance(event.get(k), dict) and not all(
                    isinstance(n, str) and isinstance(v, str) for n, v in event[k].items()):
                wrong.append(f"{k} (names and values must be strings)")
        for k in ("multiValueHeaders", "multiValueQueryStringParameters"):
            if isinstance(event.get(k), dict) and not all(
                    isinstance(n, str) and isinstance(v, list) and all(isinstance(x, str) for x in v)
                    for n, v in event[k].items()):
                wrong.append(f"{k} (lists of strings)")
        if wrong:
            raise HttpError(400, "bad_event", f"event field(s) of the wrong type: "
                                              f"{', '.join(wrong)}")
    if "httpMethod" in event:
        ok = isinstance(event.get("httpMethod"), str) and isinstance(event.get("path"), str) \
            and isinstance(event.get("requestContext"), dict)
        if not ok:
            raise HttpError(400, "bad_event", "REST event needs httpMethod, path and "
                                              "requestContext")
        return "rest"
    if event.get("version") == "2.0" and "requestContext" in event:
        ctx = event.get("requestContext")
        http = ctx.get("http") if isinstance(ctx, dict) else None
        if not isinstance(ctx, dict) or not isinstance(http, dict) \
                or not isinstance(http.get("method"), str) \
                or not isinstance(event.get("rawPath", http.get("path")), str) \
                or not isinstance(ctx.get("stage"), str):
            raise HttpError(400, "bad_event", "HTTP API event needs requestContext.http.method, "
                                              "requestContext.stage and rawPath")
        domain = ctx.get("domainName") if isinstance(ctx, dict) else ""
        return "url" if ".lambda-url." in str(domain or "") else "http"
    return "direct"


class Handler:
    """Picks the resolver for the event's shape; direct invocations call /predict's logic.
    Every event gets a response with a statusCode, and one request at a time: Powertools
    keeps the current event on the resolver, so threaded hosts (`xlmr serve`, waitress)
    must not interleave requests (Lambda itself sends one at a time)."""

    def __init__(self, service: Service, settings: Settings) -> None:
        self.service, self.settings = service, settings
        self.first = True  # the first request's time completes the cold start's figures
        self.restored_at: float | None = None  # set by the SnapStart after-restore hook
        self.apps = {"rest": build_app(service, settings, APIGatewayRestResolver),
                     "http": build_app(service, settings, APIGatewayHttpResolver),
                     "url": build_app(service, settings, LambdaFunctionUrlResolver)}
        self._lock = threading.Lock()

    def __call__(self, event: Any, context: Any) -> Any:
        request_id = getattr(context, "aws_request_id", "local")
        with self._lock:
            try:
                if not isinstance(event, dict):
                    raise HttpError(400, "bad_event", "event must be a JSON object")
                kind = event_kind(event)
                t0 = time.perf_counter()
                answer = self.direct(event, context) if kind == "direct" else \
                    self.apps[kind].resolve(event, context)
                if self.first:
                    self.first = False
                    since = {"ms_since_restore": round((t0 - self.restored_at) * 1000, 1)} \
                        if self.restored_at is not None else {}
                    logger.info("first request", extra={
                        "first_request_ms": round((time.perf_counter() - t0) * 1000, 1),
                        **since})
                return answer
            except FATAL:
                raise
            except BaseException as exc:  # a malformed event, a failure outside the routes, or
                # what passes every `except Exception` (pyo3's PanicException from tokenizers)
                return failure(exc, request_id, event)

    def rehearse(self, event: dict[str, Any]) -> Any:
        """Answer `event` as a request, but not as the first one and with no metrics: what
        SnapStart's before-snapshot hook runs, so that whatever a first request would build
        lazily (caches, imports, the resolver) is built before the snapshot."""
        first, self.first = self.first, False
        try:
            return self(event, None)
        finally:
            self.first = first
            metrics.clear_metrics()

    def direct(self, event: dict[str, Any], context: Any) -> Any:
        """A direct invocation: the event is /predict's body, answered by /predict's logic."""
        try:
            result, _ = self.service.answer(PREDICT, event)
            check_payload(json.dumps(result, ensure_ascii=False), self.settings.max_response_bytes)
            return result
        except FATAL:
            raise
        except BaseException as exc:
            status, payload = error_body(exc, getattr(context, "aws_request_id", "local"))
            if status >= 500:
                logger.exception("direct invocation failed", extra={
                    "error_class": type(exc).__name__})
            return {"statusCode": status, **payload}


def make_handler(settings: Settings, imports_ms: float | None = None,
                 loading: Future[Loaded] | None = None) -> Handler:
    """The handler over the bundle `settings` name (already loading when `loading` is given)."""
    lambda_safe_environment()
    logging.getLogger("xlmr.runtime").setLevel(logging.INFO)
    if settings.renamed:
        logger.warning("settings read under their old names: rename them, the next release "
                       "reads only the new ones", extra={
                           "renamed": {old: PREFIX + old for old in settings.renamed}})
    return Handler(load_service(settings, imports_ms, loading), settings)
