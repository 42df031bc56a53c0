"""Build-time side: Hugging Face model -> verified ONNX bundle (torch, transformers, onnx)."""
from .build import build_bundle
from .errors import ExportError, ToleranceError

__all__ = ["build_bundle", "ExportError", "ToleranceError"]
