"""torch -> ONNX with the TorchScript exporter, whose graphs are the ones onnxruntime's
transformer fusions match (dynamo graphs break them, onnxruntime #19423); weights streamed
(export/weightless.py)."""
from __future__ import annotations

from pathlib import Path

import onnx
import torch

from ..runtime.tasks.spec import INPUT_NAMES, TaskSpec
from . import weightless
from .models import OnnxWrapper
from .tied_table import transpose_tied_table


def dummy_inputs(spec: TaskSpec, mask_token_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded example batch shaped as the spec's inputs (a choices axis adds one dimension);
    a mask_rows graph gets <mask> tokens to gather."""
    ids = torch.tensor([[0, 5, 6, 7, 8, 2], [0, 9, 10, 2, 1, 1]])
    if spec.graph == "mask_rows" and mask_token_id is not None:
        ids[:, 2] = mask_token_id
    mask = (ids != 1).long()
    if len(spec.inputs) == 3:
        return ids.unsqueeze(0), mask.unsqueeze(0)
    return ids, mask


def export_onnx(model: torch.nn.Module, spec: TaskSpec, path: Path, mask_token_id: int | None,
                opset: int = 17) -> Path:
    """Trace `model` for the task `spec` describes (its outputs, extra heads included) to
    `path` (fp32), its weights streamed into `path.data` (export/weightless.py: the
    checkpoint is never held twice); the tied LM head rewritten to read its table transposed
    (export/tied_table.py)."""
    wrapper = OnnxWrapper(model, spec, mask_token_id).eval()
    path = Path(path)

    def tie(proto: onnx.ModelProto, transpose: weightless.Transposer) -> None:
        if spec.graph in ("mask_rows", "lm_head", "splade"):
            transpose_tied_table(proto, transpose)

    weightless.export_streamed(
        wrapper, dummy_inputs(spec, mask_token_id), path, rewrite=tie,
        input_names=list(INPUT_NAMES), output_names=list(spec.output_names),
        dynamic_axes=spec.dynamic_axes(), opset_version=opset)
    model.eval()  # export restores the wrapper's mode; keep the model in eval for parity
    return path
