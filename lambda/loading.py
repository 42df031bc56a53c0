"""The bundle's load, begun before the handler imports Powertools (handler.py starts it first
thing). The handler's imports wait until the load's own imports (numpy, onnxruntime,
tokenizers) are done and onnxruntime builds its session without the GIL: two threads importing
at once take turns on the GIL, and the session, the one thing that can run beside the
handler's imports, would start later (measured in benchmarks/results/*/lambda-cold-start).
Nothing here imports Powertools; app.py logs the outcome."""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from typing import Any

from .config import Settings, lambda_safe_environment

Loaded = tuple[Any, dict[str, float]]  # the pipeline and the load's phases, ms


def load_pipeline(settings: Settings, started: threading.Event | None = None) -> Loaded:
    """The served pipeline (the image's folder, or S3) and where its load went: the S3
    download and the bundle's phases (runtime/bundle.py: manifest, onnxruntime import,
    tokenizer, session and verification side by side). `started` is set once the load lets
    the GIL go: at once for an S3 bundle (its download waits on the network), else when the
    session builds in native code (runtime.load)."""
    from ..runtime import load

    t0 = time.perf_counter()
    phases: dict[str, float] = {}
    folder = settings.bundle_dir
    if settings.model_s3_uri:
        from .s3 import fetch_bundle

        if started is not None:
            started.set()
        folder = fetch_bundle(settings.model_s3_uri)
        phases["s3_download"] = round((time.perf_counter() - t0) * 1000, 1)
    pipe = load(folder, provider=settings.provider, precision=settings.precision,
                verify=settings.verify, batch_size=settings.batch_size,
                io_binding=settings.io_binding, budget=settings.budget, started=started)
    return pipe, {**phases, **pipe.bundle.timings}


def start_loading(settings: Settings) -> Future[Loaded]:
    """load_pipeline on its own thread, begun now; returns once that load has let the GIL go
    (or ended), and the future holds its result or error."""
    lambda_safe_environment()
    logging.getLogger("xlmr.runtime").setLevel(logging.INFO)
    future: Future[Loaded] = Future()
    started = threading.Event()

    def run() -> None:
        try:
            future.set_result(load_pipeline(settings, started))
        except BaseException as exc:  # handed to whoever waits (app.load_service logs it)
            future.set_exception(exc)
        finally:
            started.set()

    threading.Thread(target=run, name="xlmr-bundle-load", daemon=True).start()
    started.wait()
    return future
