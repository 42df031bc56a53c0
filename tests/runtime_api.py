"""The Lambda Runtime API, emulated on loopback: hands out events to a runtime interface
client (awslambdaric, as the image runs it), answers SnapStart's /runtime/restore/next and
collects /runtime/restore/error (and init errors) with the rest, and notes when
each arrived, so that a cold start is timed the way Lambda sees it: process start to the
first response posted back. The tests drive the handler through it too."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


class RuntimeApi:
    """Serves `events` (each with an `_id`, its request id) in order, then blocks as a real
    Runtime API does; `responses[id]` and `answered_at[id]` (time.perf_counter) fill in."""

    def __init__(self, events: list[dict]) -> None:
        self.pending = list(events)
        self.responses: dict[str, dict] = {}
        self.answered_at: dict[str, float] = {}
        self.first_poll: float | None = None  # the client's first GET: its init is over
        self.errors: list[dict] = []
        self.calls: list[str] = []  # every request's method and path, in order
        self.restored = threading.Event()  # SnapStart: the client asked /restore/next
        self.restored_at: float | None = None  # when the restore was answered
        self.on_snapshot: Callable[[], None] | None = None  # runs when the snapshot is due
        self.done = threading.Event()
        self.answered = threading.Event()
        api = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                api.calls.append(f"GET {self.path}")
                if self.path.endswith("/runtime/restore/next"):  # SnapStart: hooks ran, the
                    if api.on_snapshot is not None:  # snapshot is taken here; the answer is
                        api.on_snapshot()  # the restore
                    api.restored.set()
                    api.restored_at = time.perf_counter()
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if api.first_poll is None:
                    api.first_poll = time.perf_counter()
                if not api.pending:
                    api.done.set()
                    time.sleep(30)  # a real Runtime API blocks until the next event
                    return
                event = dict(api.pending.pop(0))
                request_id = event.pop("_id")
                data = json.dumps(event).encode()
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn",
                                 "arn:aws:lambda:us-east-1:000000000000:function:xlmr")
                self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
                self.send_header("Lambda-Runtime-Client-Context", "")
                self.send_header("Lambda-Runtime-Cognito-Identity", "")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                api.calls.append(f"POST {self.path}")
                at = time.perf_counter()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = self.path.strip("/").split("/")
                if parts[-1] == "response":
                    api.responses[parts[-2]] = json.loads(body)
                    api.answered_at[parts[-2]] = at
                    api.answered.set()
                else:
                    api.errors.append({"path": self.path, "body": body.decode()})
                    api.answered.set()
                self.send_response(202)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
