"""The Lambda image as a SageMaker container: SageMaker starts it as `docker run IMAGE serve`
(lambda/entrypoint.sh) and sends GET /ping and POST /invocations to port 8080
(SAGEMAKER_BIND_TO_PORT where it says otherwise). Served by the standard library's threaded
server through the same WSGI adapter and handler as everywhere else; the bundle and settings
from the environment, as on Lambda.

    python -m xlmr_serverless.aws_lambda.serve
"""
from __future__ import annotations

import os

from .wsgi import create_app, threaded_server

DEFAULT_PORT = 8080  # SageMaker's container contract


def main() -> None:
    port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT") or DEFAULT_PORT)
    server = threaded_server(create_app(), "0.0.0.0", port)
    print(f"serving on port {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
