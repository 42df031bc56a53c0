"""Build-time side: Hugging Face model -> verified ONNX bundle (torch, transformers, onnx).
Importing the package is cheap (the CLI reports errors through it without loading torch);
`build_bundle` loads the heavy side on first use."""
from __future__ import annotations

from typing import Any

from .errors import ExportError, ToleranceError

__all__ = ["build_bundle", "ExportError", "ToleranceError"]


def __getattr__(name: str) -> Any:
    if name == "build_bundle":
        from .build import build_bundle

        return build_bundle
    raise AttributeError(name)
