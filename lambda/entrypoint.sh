#!/bin/sh
# The Lambda image's entrypoint. SageMaker starts a container as `docker run IMAGE serve`: that
# one word serves HTTP on port 8080 (lambda/serve.py). Anything else is Lambda's (and
# sam local's) handler name, passed to the base image's own entrypoint unchanged.
if [ "${1:-}" = "serve" ]; then
  exec python -m xlmr_serverless.aws_lambda.serve
fi
exec "${LAMBDA_BASE_ENTRYPOINT:-/lambda-entrypoint.sh}" "$@"
