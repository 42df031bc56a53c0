"""The runtime's typed errors: each carries the HTTP status and a short type name, so the
Lambda adapter maps them to responses in one place (as Powertools and TEI do)."""
from __future__ import annotations


class XlmrError(Exception):
    """Base class of every error the runtime raises on purpose."""

    status: int = 500
    error_type: str = "internal_error"


class BundleError(XlmrError):
    """The bundle cannot be loaded: missing files, bad hash, unknown schema version."""

    status = 500
    error_type = "bundle_error"


class InvalidInputError(XlmrError):
    """The caller's input or parameters cannot be served (HTTP 422)."""

    status = 422
    error_type = "invalid_input"


class EmptyInputError(InvalidInputError):
    """The request carried no input at all (HTTP 400)."""

    status = 400
    error_type = "empty_input"


class InputTooLongError(InvalidInputError):
    """An input exceeds the model's position table and the task cannot stride (HTTP 422)."""

    error_type = "input_too_long"


class UnsupportedTaskError(XlmrError):
    """The bundle's task (or the requested route) is not one the runtime serves."""

    status = 400
    error_type = "unsupported_task"


class ProviderError(XlmrError):
    """The requested execution provider is not available on this host."""

    status = 500
    error_type = "provider_error"
