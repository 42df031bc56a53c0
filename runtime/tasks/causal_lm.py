"""causal-lm: the next-token distribution after a prompt (no generation loop): the top_k
tokens with their probabilities, as fill-mask reports its candidates."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..budget import FLOAT_JSON_BYTES, INT_JSON_BYTES, text_json_bytes
from ..ops import softmax, top_k_indices
from ..parameters import POSITIVE_INT
from ..pipeline import Options, Pipeline, Prepared, RowOutputs
from .spec import TaskSpec, logits

SPEC = TaskSpec(
    name="causal-lm", auto_class="AutoModelForCausalLM", head="ForCausalLM",
    outputs=logits("batch", "sequence", None), graph="lm_head", parity="token",
    requires="is_decoder", sample={"inputs": "The capital of France is", "parameters": {"top_k": 3}},
    parameters={"top_k": POSITIVE_INT})


class CausalLMPipeline(Pipeline):
    spec = SPEC

    def sanitize(self, params: dict[str, Any]) -> Options:
        top_k = params.get("top_k", 5)
        self.budget.check_top_k(top_k)
        return {"top_k": top_k}

    def preprocess(self, items: list[str], options: Options) -> list[Prepared]:
        return [Prepared([self.prompt_ids(e.ids)]) for e in self.tokenizer.encode(items)]

    def prompt_ids(self, ids: list[int]) -> list[int]:
        """The template's trailing </s> ends the text: the next token follows the prompt."""
        eos = {self.bundle.specials.get("eos"), self.bundle.specials.get("sep")}
        return ids[:-1] if len(ids) > 1 and ids[-1] in eos else ids

    def answer_bytes(self, prepared: Prepared, options: Options) -> int:
        """top_k candidates, each a token of the vocabulary."""
        return options["top_k"] * (48 + FLOAT_JSON_BYTES + INT_JSON_BYTES +
                                   text_json_bytes(self.tokenizer.longest_piece + 1))

    def postprocess(self, prepared: Prepared, outputs: list[RowOutputs],
                    options: Options) -> list[dict[str, Any]]:
        probs = softmax(outputs[0][0][-1].astype(np.float32))
        order = top_k_indices(probs, options["top_k"])
        return [{"score": float(probs[i]), "token": int(i),
                 "token_str": self.tokenizer.decode([int(i)])} for i in order]
