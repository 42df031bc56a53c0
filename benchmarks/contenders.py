"""The contenders, one class each, all answering the same call: forward a padded batch of
token ids and return the task's output as numpy. Each runs in its own worker process."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from xlmr_serverless.runtime.tasks import task_spec


def task_output(task: str, out: Any, ids: np.ndarray, mask_id: int | None) -> np.ndarray:
    """The comparable output: hidden states, logits, or fill-mask logits at the <mask> rows."""
    if task == "feature-extraction":
        arr = out[0] if isinstance(out, (tuple, list)) else out.last_hidden_state
    elif task == "question-answering":
        arr = np.stack([np.asarray(out.start_logits), np.asarray(out.end_logits)])
        return arr
    else:
        arr = out[0] if isinstance(out, (tuple, list)) else out.logits
    arr = np.asarray(arr.detach().numpy() if hasattr(arr, "detach") else arr)
    if task == "fill-mask" and arr.ndim == 3:
        arr = arr.reshape(-1, arr.shape[-1])[ids.reshape(-1) == mask_id]
    return arr


class Torch:
    """PyTorch + transformers, fp32, SDPA attention (what a user runs without this project)."""

    def __init__(self, model: str, task: str, threads: int, **_: Any) -> None:
        import torch
        import transformers

        torch.set_num_threads(threads)
        self.torch, self.task = torch, task
        self.model = getattr(transformers, task_spec(task).auto_class).from_pretrained(
            model, attn_implementation="sdpa").eval()

    def __call__(self, ids: np.ndarray, mask: np.ndarray, mask_id: int | None) -> np.ndarray:
        with self.torch.inference_mode():
            out = self.model(input_ids=self.torch.from_numpy(ids),
                             attention_mask=self.torch.from_numpy(mask))
        if self.task == "question-answering":
            return np.stack([out.start_logits.numpy(), out.end_logits.numpy()])
        return task_output(self.task, out, ids, mask_id)


class Optimum:
    """Optimum's ORTModel on its own export (fp32) or its ORTQuantizer int8 file."""

    def __init__(self, model: str, task: str, threads: int, onnx_dir: str, file: str, **_: Any):
        import onnxruntime as ort
        import optimum.onnxruntime as opt

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        self.task = task
        cls = getattr(opt, str(task_spec(task).optimum_class))
        self.model = cls.from_pretrained(onnx_dir, file_name=file,
                                                             session_options=opts)

    def __call__(self, ids: np.ndarray, mask: np.ndarray, mask_id: int | None) -> np.ndarray:
        import torch

        out = self.model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
        if self.task == "question-answering":
            return np.stack([np.asarray(out.start_logits), np.asarray(out.end_logits)])
        return task_output(self.task, out, ids, mask_id)


class Bundle:
    """This project's runtime on one of the bundle's files."""

    def __init__(self, bundle: str, precision: str, threads: int, provider: str = "cpu",
                 io_binding: bool | None = None, **_: Any):
        from xlmr_serverless.runtime import load

        self.pipe = load(bundle, provider=provider, precision=precision, threads=threads,
                         io_binding=io_binding)
        self.task = self.pipe.manifest.task

    def __call__(self, ids: np.ndarray, mask: np.ndarray, mask_id: int | None) -> np.ndarray:
        out = self.pipe.bundle.run(ids, mask)
        return np.stack(out) if self.task == "question-answering" else out[0]


KINDS = {"torch": Torch, "optimum": Optimum, "bundle": Bundle}


def file_size(spec: dict[str, Any]) -> int:
    """Bytes on disk of what the contender loads (model file plus external data)."""
    if spec["kind"] == "bundle":
        import json

        m = json.loads((Path(spec["bundle"]) / "manifest.json").read_text())
        f = next(x for x in m["files"] if x["precision"] == spec["precision"])
        return f["size"] + sum(e["size"] for e in f["external_data"])
    if spec["kind"] == "optimum":
        p = Path(spec["onnx_dir"]) / spec["file"]
        data = p.with_name(p.name + "_data")
        return p.stat().st_size + (data.stat().st_size if data.exists() else 0)
    return sum(f.stat().st_size for f in Path(spec["model"]).glob("*.safetensors"))


def timed_runs(fn: Any, ids: np.ndarray, mask: np.ndarray, mask_id: int | None,
               iters: int) -> list[float]:
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn(ids, mask, mask_id)
        out.append((time.perf_counter() - t0) * 1000)
    return out
