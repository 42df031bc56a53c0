"""torch -> ONNX with the TorchScript exporter: its graphs are the ones onnxruntime's
transformer fusions match (dynamo graphs break them, onnxruntime #19423)."""
from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch

from ..runtime.tasks.spec import INPUT_NAMES
from . import models
from .models import OnnxWrapper
from .tied_table import transpose_tied_table

TWO_GB = 2 * 1024**3


def dummy_inputs(task: str, mask_token_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded example batch shaped as the spec's inputs (a choices axis adds one dimension);
    a mask_rows graph gets <mask> tokens to gather."""
    spec = models.spec(task)
    ids = torch.tensor([[0, 5, 6, 7, 8, 2], [0, 9, 10, 2, 1, 1]])
    if spec.graph == "mask_rows" and mask_token_id is not None:
        ids[:, 2] = mask_token_id
    mask = (ids != 1).long()
    if len(spec.inputs) == 3:
        return ids.unsqueeze(0), mask.unsqueeze(0)
    return ids, mask


def model_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def export_onnx(model: torch.nn.Module, task: str, path: Path, mask_token_id: int | None,
                opset: int = 17, external_data: bool | None = None) -> Path:
    """Trace `model` for `task` to `path` (fp32); external data when >2 GB or forced."""
    wrapper = OnnxWrapper(model, task, mask_token_id).eval()
    spec = models.spec(task)
    path = Path(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, dummy_inputs(task, mask_token_id), str(path),
            input_names=list(INPUT_NAMES), output_names=list(spec.output_names),
            dynamic_axes=spec.dynamic_axes(), opset_version=opset, do_constant_folding=True,
            dynamo=False,
        )
    model.eval()  # export restores the wrapper's mode; keep the model in eval for parity
    if external_data is None:
        external_data = model_bytes(model) > TWO_GB
    proto = onnx.load(str(path))
    # the tied LM head as x @ W^T, W^T stored once (export/tied_table.py)
    tied = spec.graph in ("mask_rows", "lm_head") and transpose_tied_table(proto)
    if external_data or tied:
        save_onnx(proto, path, external_data=external_data)
    return path


def save_onnx(proto: onnx.ModelProto, path: Path, external_data: bool) -> list[Path]:
    """Write a model, its weights in one `<name>.data` file when `external_data`; returns
    every file written."""
    path = Path(path)
    data = path.with_name(path.name + ".data")
    for stale in (data,):
        stale.unlink(missing_ok=True)
    if external_data:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
        return [path, data]
    onnx.save_model(proto, str(path))
    return [path]
