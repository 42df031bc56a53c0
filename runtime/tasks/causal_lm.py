"""causal-lm: the next-token distribution after a prompt (no generation loop): the top_k
tokens with their probabilities, as fill-mask reports its candidates."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..ops import softmax
from ..pipeline import Pipeline, as_text_list, positive_int


class CausalLMPipeline(Pipeline):
    task = "causal-lm"
    parameters = frozenset({"top_k"})

    def __call__(self, inputs: Any, **params: Any) -> Any:
        self.check_parameters(params)
        top_k = positive_int("top_k", params.get("top_k", 5))
        texts, was_list = as_text_list(inputs)
        rows = [self.prompt_ids(e.ids) for e in self.tokenizer.encode(texts)]
        outs = self.bundle.run_rows(rows, self.batch_size, "token")
        results = [self.postprocess(o[0][-1], top_k) for o in outs]
        return results if was_list else results[0]

    def prompt_ids(self, ids: list[int]) -> list[int]:
        """The template's trailing </s> ends the text: the next token follows the prompt."""
        eos = {self.bundle.specials.get("eos"), self.bundle.specials.get("sep")}
        return ids[:-1] if len(ids) > 1 and ids[-1] in eos else ids

    def postprocess(self, logits: np.ndarray, top_k: int) -> list[dict[str, Any]]:
        probs = softmax(logits.astype(np.float32))
        order = np.argsort(-probs, kind="stable")[:top_k]
        return [{"score": float(probs[i]), "token": int(i),
                 "token_str": self.tokenizer.decode([int(i)])} for i in order]
