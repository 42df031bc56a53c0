"""The image's handler with one more after-restore hook that fails: the SnapStart test's way
to see awslambdaric report an after-restore error through the Runtime API."""
from snapshot_restore_py import register_after_restore

from xlmr_serverless.aws_lambda.handler import handler  # noqa: F401  (the handler it serves)


def _fails() -> None:
    raise RuntimeError("planted after-restore failure")


register_after_restore(_fails)
