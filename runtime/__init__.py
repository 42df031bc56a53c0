"""Serving side: onnxruntime + tokenizers + numpy only (never torch or transformers).

    from runtime import load
    pipe = load("bundle/")            # provider="auto", precision=None (int8 on CPU, fp16 on CUDA)
    pipe("Paris is the <mask> of France.")
"""
from __future__ import annotations

from pathlib import Path

from .bundle import Bundle, open_bundle
from .errors import (BundleError, EmptyInputError, InputTooLongError, InvalidInputError,
                     ProviderError, UnsupportedTaskError, XlmrError)
from .pipeline import Pipeline

__all__ = ["load", "Pipeline", "Bundle", "XlmrError", "BundleError", "InvalidInputError",
           "EmptyInputError", "InputTooLongError", "UnsupportedTaskError", "ProviderError"]


def load(bundle_dir: str | Path, provider: str = "auto", precision: str | None = None,
         threads: int | None = None, batch_size: int = 16, verify: bool = True,
         io_binding: bool | None = None) -> Pipeline:
    """Load a bundle and return the pipeline of its task. `io_binding` None: on for CUDA
    (inputs and outputs bound on the GPU), off on CPU where it only adds bookkeeping."""
    from .tasks import TASKS

    bundle = open_bundle(bundle_dir, provider=provider, precision=precision, threads=threads,
                         verify=verify, io_binding=io_binding)
    cls = TASKS.get(bundle.manifest.task)
    if cls is None:
        raise UnsupportedTaskError(f"task {bundle.manifest.task!r} is not served by this runtime")
    return cls(bundle, batch_size=batch_size)
