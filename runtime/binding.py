"""IO binding: a forward pass whose inputs are copied to the device before Run() and whose
outputs onnxruntime allocates on the device, fetched to the host in one step afterwards.
onnxruntime's own advice for non-CPU providers (docs: performance/tune-performance/iobinding);
on CPU it is only bookkeeping, so the runtime uses it on CUDA alone by default."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def use_io_binding(requested: bool | None, provider: str) -> bool:
    """None means where it pays: on the CUDA provider, not on CPU."""
    return provider == "cuda" if requested is None else bool(requested)


def bound_run(session: Any, feed: Mapping[str, np.ndarray], provider: str,
              device_id: int = 0) -> list[np.ndarray]:
    """session.run(None, feed) through an IO binding on `provider`'s device ("cpu" or
    "cuda", onnxruntime's device names too); same outputs."""
    import onnxruntime as ort

    binding = session.io_binding()
    values = {name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a), provider, device_id)
              for name, a in feed.items()}  # kept alive until the run is over
    for name, value in values.items():
        binding.bind_ortvalue_input(name, value)
    for out in session.get_outputs():
        binding.bind_output(out.name, provider, device_id)
    session.run_with_iobinding(binding)
    outputs: list[np.ndarray] = binding.copy_outputs_to_cpu()
    return outputs
