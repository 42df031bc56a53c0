"""SPLADE sparse embeddings from a masked-LM checkpoint, as sentence-transformers' SparseEncoder
(MLMTransformer + SpladePooling) and TEI's splade pooling compute them: log(1 + ReLU(logits)),
the maximum over the text's tokens, one weight per vocabulary piece. The graph pools, so it
returns [batch, vocab]; the answer keeps the non-zero weights, as TEI's /embed_sparse does."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..budget import FLOAT_JSON_BYTES, INT_JSON_BYTES
from ..bundle import padded_tokens
from ..errors import InvalidInputError
from ..ops import top_k_indices
from ..parameters import BOOL, POSITIVE_INT, nullable
from ..pipeline import Options, Pipeline, Prepared, RowOutputs, one_of
from .spec import Output, TaskSpec

SPEC = TaskSpec(
    name="sparse-embedding", auto_class="AutoModelForMaskedLM", head="ForMaskedLM",
    outputs=(Output("sparse_embedding", ("batch", None)),), graph="splade", parity="sparse",
    truncation={"truncation": True},
    routes=("/predict", "/embed_sparse"), natural_route="/embed_sparse",
    sample={"inputs": "XLM-R runs on AWS Lambda."},
    # sentence-transformers' SparseEncoder's cap: only the largest N weights are kept
    parameters={"truncation": BOOL, "max_active_dims": nullable(POSITIVE_INT)})

# one {"index", "value"} entry as JSON
ENTRY_JSON_BYTES = 24 + INT_JSON_BYTES + FLOAT_JSON_BYTES


class SparseEmbeddingPipeline(Pipeline):
    spec = SPEC

    def sanitize(self, params: dict[str, Any]) -> Options:
        return {"truncate": bool(params.get("truncation")),
                "max_active_dims": params.get("max_active_dims")}

    def preprocess(self, items: list[str], options: Options) -> list[Prepared]:
        encs = self.tokenizer.encode(items, truncation="longest_first" if options["truncate"]
                                     else None, max_length=self.manifest.max_length,
                                     direction=options.get("direction", "right"))
        return [Prepared([e.ids]) for e in encs]

    def check_cost(self, prepared: list[Prepared], options: Options) -> None:
        """As every task, and the vocabulary scores the graph makes for every token before it
        pools them (tokens x vocabulary numbers, padded as the batches run)."""
        super().check_cost(prepared, options)
        rows = [r for p in prepared for r in p.rows]
        self.budget.check_outputs(padded_tokens(rows, self.batch_size) * self.bundle.output_width,
                                  f"{len(rows)} row(s), scored over the vocabulary per token")

    def postprocess(self, prepared: Prepared, outputs: list[RowOutputs], options: Options) -> Any:
        """The text's non-zero weights as (indices, values), by index; the largest
        `max_active_dims` only, where asked."""
        weights = outputs[0][0]
        nonzero = np.flatnonzero(weights)
        cap = options.get("max_active_dims")
        if cap and len(nonzero) > cap:
            nonzero = np.sort(top_k_indices(weights, cap))
        return nonzero, weights[nonzero].astype(np.float32)

    def answer_bytes(self, prepared: Prepared, options: Options) -> int:
        """Before the model runs, only a cap bounds a SPLADE answer (any piece of the
        vocabulary may get a weight): `max_active_dims` entries where asked; otherwise the
        count is checked after the run, before any entry is made (collate)."""
        return (options.get("max_active_dims") or 0) * ENTRY_JSON_BYTES

    def collate(self, results: list[Any], shape: Any, options: Options) -> Any:
        """TEI's entries, once their count fits the response budget."""
        entries = sum(len(i) for i, _ in results)
        self.budget.check_response(entries * ENTRY_JSON_BYTES,
                                   f"{entries} non-zero weights over {len(results)} text(s)")
        answers = [[{"index": int(i), "value": float(v)} for i, v in zip(idx.tolist(), val.tolist())]
                   for idx, val in results]
        return answers if shape else answers[0]

    def embed_sparse(self, texts: list[str], truncate: bool = False, direction: str = "right",
                     prompt_name: str | None = None) -> list[list[dict[str, Any]]]:
        """TEI's /embed_sparse: each text's non-zero weights as [{"index", "value"}], by index."""
        if prompt_name is not None:
            raise InvalidInputError("prompt_name: this bundle has no prompts")
        options = {"truncate": truncate, "direction": one_of(
            "truncation_direction", direction, ("right", "left"))}
        self.check_texts(texts, f"{len(texts)} text(s) to embed")
        prepared = self.preprocess(texts, options)
        self.check_cost(prepared, options)
        return self.collate([self.postprocess(p, o, options)
                             for p, o in zip(prepared, self.forward(prepared))], True, options)

    def encode(self, texts: list[str], truncate: bool = False) -> np.ndarray:
        """The dense [n, vocab] float32 weights, as SparseEncoder.encode's (densified)."""
        options = {"truncate": truncate}
        self.check_texts(texts, f"{len(texts)} text(s) to embed")
        prepared = self.preprocess(texts, options)
        self.check_cost(prepared, options)
        return np.stack([o[0][0] for o in self.forward(prepared)]).astype(np.float32)
