"""Serving side: onnxruntime + tokenizers + numpy only (never torch or transformers).

    from xlmr_serverless.runtime import load
    pipe = load("bundle/")            # provider="auto", precision=None (int8 on CPU, fp16 on CUDA)
    pipe("Paris is the <mask> of France.")

Only the errors import eagerly: a caller that merely reports one loads no numpy.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .budget import Budget, OverBudgetError
from .errors import (
    BundleError,
    EmptyInputError,
    InputTooLongError,
    InvalidInputError,
    ProviderError,
    UnsupportedTaskError,
    XlmrError,
)

if TYPE_CHECKING:
    import threading

    from .bundle import Bundle
    from .pipeline import Pipeline

__all__ = ["load", "Pipeline", "Bundle", "Budget", "OverBudgetError", "XlmrError", "BundleError",
           "InvalidInputError", "EmptyInputError", "InputTooLongError", "UnsupportedTaskError",
           "ProviderError"]


def load(bundle_dir: str | Path, provider: str = "auto", precision: str | None = None,
         threads: int | None = None, batch_size: int = 16, verify: bool = True,
         io_binding: bool | None = None, budget: Budget | None = None,
         started: threading.Event | None = None) -> Pipeline:
    """Load a bundle and return the pipeline of its task. `batch_size` is how many rows one
    forward pass takes; `io_binding` None: on for CUDA (inputs and outputs bound on the GPU),
    off on CPU where it only adds bookkeeping; `budget` limits what one call may cost (none
    by default: the Lambda adapter sets it from its environment); `started` is set once the
    load's own imports are done and its session builds without the GIL (bundle.open_bundle)."""
    from .bundle import open_bundle
    from .tasks import pipeline_class

    bundle = open_bundle(bundle_dir, provider=provider, precision=precision, threads=threads,
                         verify=verify, io_binding=io_binding, started=started)
    return pipeline_class(bundle.manifest.task)(bundle, batch_size=batch_size, budget=budget)


def __getattr__(name: str) -> Any:
    if name == "Pipeline":
        from .pipeline import Pipeline

        return Pipeline
    if name == "Bundle":
        from .bundle import Bundle

        return Bundle
    raise AttributeError(name)
