"""Which transformers class serves each task, and the small torch wrappers that fix each
task's ONNX signature (inputs input_ids/attention_mask; named outputs)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from .errors import ExportError

ARCHITECTURES = ("xlm-roberta", "roberta", "xlm-roberta-xl")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Export contract of one task: the auto class, the head suffix and the graph outputs."""

    auto_class: str
    head: str | None  # architectures suffix that carries the right head (None: any)
    outputs: tuple[str, ...]


TASK_SPECS: dict[str, TaskSpec] = {
    "feature-extraction": TaskSpec("AutoModel", None, ("last_hidden_state",)),
    "fill-mask": TaskSpec("AutoModelForMaskedLM", "ForMaskedLM", ("logits",)),
    "text-classification": TaskSpec(
        "AutoModelForSequenceClassification", "ForSequenceClassification", ("logits",)
    ),
    "zero-shot-classification": TaskSpec(
        "AutoModelForSequenceClassification", "ForSequenceClassification", ("logits",)
    ),
    "token-classification": TaskSpec(
        "AutoModelForTokenClassification", "ForTokenClassification", ("logits",)
    ),
    "question-answering": TaskSpec(
        "AutoModelForQuestionAnswering", "ForQuestionAnswering", ("start_logits", "end_logits")
    ),
    "multiple-choice": TaskSpec("AutoModelForMultipleChoice", "ForMultipleChoice", ("logits",)),
    "causal-lm": TaskSpec("AutoModelForCausalLM", "ForCausalLM", ("logits",)),
}


def has_entailment(label2id: dict[str, int]) -> bool:
    return any(label.lower().startswith("entail") for label in label2id)


def infer_task(config: Any) -> str:
    """`--task auto`: the task from config.architectures (NLI heads become zero-shot)."""
    archs = getattr(config, "architectures", None) or []
    if not archs:
        raise ExportError("--task auto needs config.architectures; pass --task explicitly")
    arch = archs[0]
    for task, spec in TASK_SPECS.items():
        if spec.head and arch.endswith(spec.head):
            if task == "text-classification" and has_entailment(config.label2id):
                return "zero-shot-classification"
            return task
    if arch.endswith("Model"):
        return "feature-extraction"
    raise ExportError(f"cannot infer a task from architecture {arch}; pass --task")


def check_config(config: Any, task: str) -> None:
    """Refuse unsupported model types, and heads that cannot serve the task."""
    if config.model_type not in ARCHITECTURES:
        raise ExportError(
            f"model_type {config.model_type!r} is not supported; supported: {', '.join(ARCHITECTURES)}"
            " (a BERT checkpoint can be converted first: see export/convert.py)"
        )
    if task not in TASK_SPECS:
        raise ExportError(f"unknown task {task!r}; tasks: auto, {', '.join(TASK_SPECS)}")
    spec = TASK_SPECS[task]
    archs = getattr(config, "architectures", None) or []
    if spec.head and archs and not any(a.endswith(spec.head) for a in archs):
        raise ExportError(
            f"task {task} needs a *{spec.head} checkpoint, but this one is {archs[0]}: "
            "its head would be randomly initialised"
        )
    if task == "zero-shot-classification" and not has_entailment(config.label2id):
        raise ExportError(
            "zero-shot-classification needs an NLI model whose labels include 'entailment'; "
            f"this one has {list(config.label2id)}"
        )
    if task == "causal-lm" and not getattr(config, "is_decoder", False):
        raise ExportError("causal-lm needs a checkpoint with is_decoder=true")


def load_model(model: str | Path, task: str) -> torch.nn.Module:
    """Load the checkpoint in eval mode with eager attention (the pattern ORT fuses)."""
    import transformers

    cls = getattr(transformers, TASK_SPECS[task].auto_class)
    m = cls.from_pretrained(str(model), attn_implementation="eager", torch_dtype=torch.float32)
    return m.eval()


class OnnxWrapper(torch.nn.Module):
    """Gives every task the same (input_ids, attention_mask) -> named outputs signature."""

    def __init__(self, model: torch.nn.Module, task: str, mask_token_id: int | None) -> None:
        super().__init__()
        self.model, self.task, self.mask_token_id = model, task, mask_token_id

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        if self.task == "fill-mask":
            return self._masked_lm(input_ids, attention_mask)
        if self.task == "causal-lm":
            hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask)[0]
            return self._lm_head(hidden)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        if self.task == "feature-extraction":
            return out.last_hidden_state
        if self.task == "question-answering":
            return out.start_logits, out.end_logits
        return out.logits

    def _masked_lm(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """LM head on the <mask> rows only: [n_masks, vocab] instead of [batch, seq, vocab]."""
        hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask)[0]
        flat = hidden.reshape(-1, hidden.shape[-1])
        rows = torch.nonzero(input_ids.reshape(-1) == self.mask_token_id).squeeze(1)
        return self._lm_head(flat.index_select(0, rows))

    def _lm_head(self, x: torch.Tensor) -> torch.Tensor:
        """dense -> gelu -> layer_norm -> tied decoder, the decoder written (W @ x^T)^T so W stays
        the one initializer the embedding Gather reads: stored once, and quantized once."""
        head = self.model.lm_head
        x = head.layer_norm(torch.nn.functional.gelu(head.dense(x)))
        bias = head.decoder.bias if head.decoder.bias is not None else head.bias
        return torch.matmul(head.decoder.weight, x.transpose(-1, -2)).transpose(-1, -2) + bias
