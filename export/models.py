"""Which transformers class serves each task, and the small torch wrappers that fix each
task's ONNX signature (inputs input_ids/attention_mask; named outputs)."""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ..runtime import tasks
from ..runtime.tasks.spec import TaskSpec
from .errors import ExportError

ARCHITECTURES = ("xlm-roberta", "roberta", "xlm-roberta-xl")


def spec(task: str) -> TaskSpec:
    """The task's spec, or an ExportError naming the tasks."""
    if task not in tasks.names():
        raise ExportError(f"unknown task {task!r}; tasks: auto, {', '.join(tasks.names())}")
    return tasks.task_spec(task)


def has_entailment(label2id: dict[str, int]) -> bool:
    return any(label.lower().startswith("entail") for label in label2id)


# what a spec's `requires` asks of the checkpoint's config, and how to say it is missing
REQUIREMENTS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "entailment_label": (lambda c: has_entailment(c.label2id),
                         "an NLI model whose labels include 'entailment'"),
    "is_decoder": (lambda c: bool(getattr(c, "is_decoder", False)),
                   "a checkpoint with is_decoder=true"),
}


def meets(config: Any, spec: TaskSpec) -> bool:
    return spec.requires is None or REQUIREMENTS[spec.requires][0](config)


def splade_pooling(model: str | Path) -> bool:
    """The checkpoint is a sentence-transformers SparseEncoder with SPLADE pooling (its
    modules.json names a SpladePooling module); a pooling other than the graph's (max of
    log(1 + ReLU)) is an ExportError."""
    import json

    modules = checkpoint_file(model, "modules.json")
    if modules is None:
        return False
    entries = json.loads(modules.read_text(encoding="utf-8"))
    pooling = next((m for m in entries if str(m.get("type", "")).endswith("SpladePooling")), None)
    if pooling is None:
        return False
    config = checkpoint_file(model, f"{pooling.get('path', '')}/config.json")
    cfg = json.loads(config.read_text(encoding="utf-8")) if config else {}
    variant = (cfg.get("pooling_strategy", "max"), cfg.get("activation_function", "relu"))
    if variant != ("max", "relu"):
        raise ExportError(f"SpladePooling {variant[0]} of {variant[1]} is not served: the "
                          "graph pools the max of log(1 + ReLU(logits)), as TEI does")
    return True


def infer_task(config: Any, model: str | Path | None = None) -> str:
    """`--task auto`: the task from config.architectures; among the tasks whose head matches,
    one with a requirement the config meets wins (an NLI head becomes zero-shot); a masked-LM
    checkpoint saved as a SPLADE SparseEncoder becomes sparse-embedding."""
    if model is not None and splade_pooling(model):
        return "sparse-embedding"
    archs = getattr(config, "architectures", None) or []
    if not archs:
        raise ExportError("--task auto needs config.architectures; pass --task explicitly")
    arch = archs[0]
    matching = [s for s in tasks.specs().values() if s.head and arch.endswith(s.head)]
    matching.sort(key=lambda s: s.requires is None)
    for s in matching:
        if meets(config, s):
            return s.name
    if arch.endswith("Model"):
        return next(s.name for s in tasks.specs().values() if s.head is None)
    raise ExportError(f"cannot infer a task from architecture {arch}; pass --task")


def check_config(config: Any, task: str) -> None:
    """Refuse unsupported model types, and heads that cannot serve the task."""
    if config.model_type not in ARCHITECTURES:
        raise ExportError(
            f"model_type {config.model_type!r} is not supported; supported: {', '.join(ARCHITECTURES)}"
            " (a BERT checkpoint can be converted first: see export/convert.py)"
        )
    s = spec(task)
    archs = getattr(config, "architectures", None) or []
    if s.head and archs and not any(a.endswith(s.head) for a in archs):
        raise ExportError(
            f"task {task} needs a *{s.head} checkpoint, but this one is {archs[0]}: "
            "its head would be randomly initialised"
        )
    if not meets(config, s):
        assert s.requires is not None
        labels = f"; this one has labels {list(config.label2id)}" \
            if s.requires == "entailment_label" else ""
        raise ExportError(f"{task} needs {REQUIREMENTS[s.requires][1]}{labels}")


FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def load_model(model: str | Path, task: str) -> torch.nn.Module:
    """Load the checkpoint in eval mode with eager attention (the pattern ORT fuses), in the
    dtype it is stored in: a bf16/fp16 checkpoint is not inflated to fp32 all at once (XL:
    7 GB, not 14); `fp32_compute` runs it in fp32 a module at a time, and the export writes
    each weight as fp32 as it goes."""
    import transformers

    cls = getattr(transformers, spec(task).auto_class)
    m = cls.from_pretrained(str(model), attn_implementation="eager", dtype="auto")
    if m.dtype not in FLOAT_DTYPES:
        m = m.float()
    return m.eval()


@contextlib.contextmanager
def fp32_compute(model: torch.nn.Module) -> Iterator[None]:
    """Forward passes in fp32 whatever the stored dtype: each module's own weights are cast up
    just before it runs and back just after, so one module at a time is held in fp32."""
    if all(p.dtype == torch.float32 for p in model.parameters()):
        yield
        return
    stored = next(p.dtype for p in model.parameters() if p.dtype != torch.float32)

    def up(module: torch.nn.Module, args: Any) -> None:
        module.to(torch.float32)

    def down(module: torch.nn.Module, args: Any, out: Any) -> None:
        module.to(stored)

    leaves = [m for m in model.modules()
              if not list(m.children()) and list(m.parameters(recurse=False))]
    handles = [h for m in leaves for h in (m.register_forward_pre_hook(up),
                                           m.register_forward_hook(down))]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@dataclasses.dataclass(frozen=True)
class Head:
    """An extra head a checkpoint folder carries beside its transformers weights: the file
    holding a Linear layer's state dict, and what the graph computes from it."""

    file: str
    compute: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]


# the task specs' `heads`, by graph output: how each is loaded and computed (BGE-M3's layers,
# as FlagEmbedding's M3 model applies them to the last hidden state)
HEADS: dict[str, Head] = {
    "token_weights": Head("sparse_linear.pt",
                          lambda layer, hidden: torch.relu(layer(hidden)).squeeze(-1)),
    "colbert_vecs": Head("colbert_linear.pt", lambda layer, hidden: layer(hidden)),
}


def checkpoint_file(model: str | Path, name: str) -> Path | None:
    """A file of the checkpoint (a local folder, or the hub's cache), or None if it has none."""
    local = Path(model) / name
    if local.is_file():
        return local
    if Path(model).exists():
        return None
    from transformers.utils import cached_file

    try:
        found = cached_file(str(model), name, _raise_exceptions_for_missing_entries=False)
    except (OSError, ValueError):
        return None
    return Path(found) if found else None


def attach_heads(model: torch.nn.Module, checkpoint: str | Path, task_spec: TaskSpec,
                 ) -> tuple[str, ...]:
    """Load the extra heads the checkpoint has among the spec's `heads` onto the model (a
    module named for its output, in the model's dtype); returns their output names."""
    found = []
    for h in task_spec.heads:
        path = checkpoint_file(checkpoint, HEADS[h.name].file)
        if path is None:
            continue
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            out_features, in_features = state["weight"].shape
            layer = torch.nn.Linear(in_features, out_features, bias="bias" in state)
            layer.load_state_dict(state)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise ExportError(f"{path.name} is not a Linear layer's state dict: {exc}") from exc
        hidden = model.config.hidden_size
        if in_features != hidden:
            raise ExportError(f"{path.name} takes {in_features} features, but the model's "
                              f"hidden size is {hidden}")
        dtype = next(model.parameters()).dtype
        model.add_module(head_module(h.name), layer.to(dtype).eval())
        found.append(h.name)
    return tuple(found)


def head_module(output: str) -> str:
    return f"{output}_head"


class OnnxWrapper(torch.nn.Module):
    """Gives every task the same (input_ids, attention_mask) -> named outputs signature; the
    spec's `graph` says how the outputs are computed, its outputs name them (an extra head's
    output is computed from the last hidden state by the layer attach_heads loaded)."""

    def __init__(self, model: torch.nn.Module, task_spec: TaskSpec,
                 mask_token_id: int | None) -> None:
        super().__init__()
        self.model, self.spec, self.mask_token_id = model, task_spec, mask_token_id

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        if self.spec.graph == "mask_rows":
            return self._masked_lm(input_ids, attention_mask)
        if self.spec.graph == "splade":
            return self._splade(input_ids, attention_mask)
        if self.spec.graph == "lm_head":
            hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask)[0]
            return self._lm_head(hidden)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        values = tuple(self._output(out, name) for name in self.spec.output_names)
        return values[0] if len(values) == 1 else values

    def _output(self, out: Any, name: str) -> torch.Tensor:
        if name in HEADS:
            layer = getattr(self.model, head_module(name))
            return HEADS[name].compute(layer, out.last_hidden_state)
        return getattr(out, name)

    def _masked_lm(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """LM head on the <mask> rows only: [n_masks, vocab] instead of [batch, seq, vocab]."""
        hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask)[0]
        flat = hidden.reshape(-1, hidden.shape[-1])
        rows = torch.nonzero(input_ids.reshape(-1) == self.mask_token_id).squeeze(1)
        return self._lm_head(flat.index_select(0, rows))

    def _splade(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """SPLADE pooling in the graph: log(1 + ReLU(logits)) pooled by the max over the real
        tokens, as [batch, vocab]. Taken as log(1 + ReLU(max + bias)) (both monotone, the bias
        the same for every token), padding made a copy of the first token: one [batch, seq,
        vocab] product is all the graph holds, never its activations or its mask."""
        hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask)[0]
        real = attention_mask.unsqueeze(-1).bool()
        hidden = torch.where(real, hidden, hidden[:, :1].expand_as(hidden))
        best = self._lm_scores(hidden).max(dim=1).values + self._lm_bias()
        return torch.log1p(torch.relu(best))

    def _lm_head(self, x: torch.Tensor) -> torch.Tensor:
        return self._lm_scores(x) + self._lm_bias()

    def _lm_scores(self, x: torch.Tensor) -> torch.Tensor:
        """dense -> gelu -> layer_norm -> tied decoder, the decoder written (W @ x^T)^T so W stays
        the one initializer the embedding Gather reads: stored once, and quantized once."""
        head = self.model.lm_head
        x = head.layer_norm(torch.nn.functional.gelu(head.dense(x)))
        return torch.matmul(head.decoder.weight, x.transpose(-1, -2)).transpose(-1, -2)

    def _lm_bias(self) -> torch.Tensor:
        head = self.model.lm_head
        return head.decoder.bias if head.decoder.bias is not None else head.bias
