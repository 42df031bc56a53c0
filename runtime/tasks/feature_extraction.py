"""feature-extraction as transformers returns it ([1, seq, hidden] per input, specials
included), and sentence embeddings as sentence-transformers computes them (strip, truncate to
max_seq_length, pool, normalize) through `embed` or the `pooling`/`normalize` parameters."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..budget import FLOAT_JSON_BYTES
from ..errors import InputTooLongError, InvalidInputError
from ..ops import l2_normalize, pool
from ..parameters import BOOL, POSITIVE_INT, choice, either, kwargs, nullable
from ..pipeline import Options, Pipeline, Prepared, RowOutputs, one_of
from .spec import Output, TaskSpec

POOLINGS = ("cls", "mean", "max")
TRUNCATION = nullable(either(BOOL, choice("longest_first", "do_not_truncate")))

SPEC = TaskSpec(
    name="feature-extraction", auto_class="AutoModel", head=None,
    outputs=(Output("last_hidden_state", ("batch", "sequence", None)),), parity="cosine",
    truncation={"truncation": True},
    routes=("/predict", "/embed", "/embed_all", "/v1/embeddings", "/similarity"),
    natural_route="/embed",
    sample={"inputs": "XLM-R runs on AWS Lambda."},
    parameters={"truncation": TRUNCATION,
                "tokenize_kwargs": kwargs(truncation=TRUNCATION, max_length=POSITIVE_INT),
                "return_tensors": BOOL, "pooling": nullable(choice(*POOLINGS)),
                "normalize": nullable(BOOL)},
    optimum_class="ORTModelForFeatureExtraction")


class FeatureExtractionPipeline(Pipeline):
    spec = SPEC

    def sanitize(self, params: dict[str, Any]) -> Options:
        """Token embeddings (the pipeline's output) unless `pooling` or `normalize` asks for
        sentence embeddings, which follow sentence-transformers' settings from the bundle."""
        if params.get("pooling") is not None or params.get("normalize") is not None:
            return self.sentence_options(params.get("pooling"), params.get("normalize"),
                                         bool(params.get("truncation")))
        tokenize_kwargs = params.get("tokenize_kwargs") or {}
        if "truncation" in params and "truncation" in tokenize_kwargs:
            raise InvalidInputError("truncation given both as a parameter and in tokenize_kwargs")
        truncation = params.get("truncation", tokenize_kwargs.get("truncation"))
        truncation = truncation.lower() if isinstance(truncation, str) else truncation
        max_length = tokenize_kwargs.get("max_length")
        truncate = truncation in (True, "longest_first") or (max_length and truncation is None)
        return {"sentence": False, "strategy": "longest_first" if truncate else None,
                "limit": min(max_length or self.manifest.max_length, self.manifest.max_length),
                "tensors": bool(params.get("return_tensors"))}

    def sentence_options(self, pooling: str | None, normalize: bool | None,
                         truncate: bool, direction: str = "right") -> Options:
        cfg = self.sentence_config
        positions = self.manifest.max_length
        st_limit = cfg.get("max_seq_length") or positions
        source = f"sentence-transformers' max_seq_length {st_limit}" if st_limit < positions \
            else f"the model's {positions} positions"
        return {"sentence": True, "source": source,
                "pooling": one_of("pooling", pooling or cfg["pooling"], POOLINGS),
                "normalize": cfg["normalize"] if normalize is None else bool(normalize),
                "strategy": "longest_first" if truncate else None,
                "direction": one_of("truncation_direction", direction, ("right", "left")),
                "limit": min(cfg.get("max_seq_length") or self.manifest.max_length,
                             self.manifest.max_length)}

    def preprocess(self, items: list[str], options: Options) -> list[Prepared]:
        texts = [t.strip() for t in items] if options["sentence"] else items
        encs = self.tokenizer.encode(texts, truncation=options["strategy"],
                                     max_length=options["limit"],
                                     direction=options.get("direction", "right"))
        for e in encs:
            if options["sentence"] and len(e.ids) > options["limit"]:
                raise InputTooLongError(f"inputs must have at most {options['limit']} tokens. "
                                        f"Given: {len(e.ids)} ({options['source']})")
        return [Prepared([e.ids]) for e in encs]

    def postprocess(self, prepared: Prepared, outputs: list[RowOutputs], options: Options) -> Any:
        hidden = outputs[0][0]
        if options["sentence"]:
            vector = pool(hidden[None], np.ones((1, len(hidden))), options["pooling"])[0]
            vector = vector[:options["dimensions"]] if options.get("dimensions") else vector
            vector = l2_normalize(vector) if options["normalize"] else vector
            return vector.astype(np.float32) if options.get("arrays") else vector.tolist()
        if options.get("arrays"):  # token_vectors: one [tokens, hidden] array per input
            return hidden.astype(np.float32)
        return hidden[None] if options["tensors"] else [hidden.tolist()]

    def answer_bytes(self, prepared: Prepared, options: Options) -> int:
        """Token embeddings are tokens x hidden floats; a sentence embedding hidden floats."""
        tokens = 1 if options["sentence"] else sum(len(r) for r in prepared.rows)
        width = options.get("dimensions") or self.bundle.output_width
        return tokens * width * FLOAT_JSON_BYTES

    @property
    def sentence_config(self) -> dict[str, Any]:
        return self.manifest.sentence_embedding or {"pooling": "cls", "normalize": False}

    def embed(self, texts: list[str], pooling: str | None = None, normalize: bool | None = None,
              truncate: bool = False, direction: str = "right", dimensions: int | None = None,
              prompt_name: str | None = None, prompt: str | None = None) -> np.ndarray:
        """Sentence embeddings [n, dim], float32, in input order, as sentence-transformers'
        encode computes them. Texts over the limit are an error unless `truncate` (the limit
        is sentence-transformers' max_seq_length), which cuts the end of the text (or its
        start, `direction="left"`). `dimensions` keeps the first ones, before normalising
        (Matryoshka models); `prompt_name` (one of the bundle's prompts) or `prompt` goes
        before each text, and the bundle's default prompt when neither is given."""
        options = {**self.sentence_options(pooling, normalize, truncate, direction),
                   "arrays": True, "dimensions": self.checked_dimensions(dimensions)}
        texts = self.with_prompt(texts, prompt_name, prompt)
        self.check_texts(texts, f"{len(texts)} text(s) to embed")
        prepared = self.preprocess(texts, options)
        self.check_cost(prepared, options)
        return np.stack([self.postprocess(p, o, options)
                         for p, o in zip(prepared, self.forward(prepared))])

    def serve(self, inputs: Any, **params: Any) -> Any:
        """As the pipeline; and the Inference API's sentence-similarity on an embedding model:
        {"source_sentence", "sentences"} -> the cosine of each sentence with the source."""
        if isinstance(inputs, dict):
            return self.similarity(inputs, **params)
        return super().serve(inputs, **params)

    def similarity(self, pair: dict[str, Any], **params: Any) -> list[float]:
        """Cosine similarity of each of `sentences` with `source_sentence`, on sentence
        embeddings (the bundle's pooling, then L2 normalised)."""
        source, sentences = pair.get("source_sentence"), pair.get("sentences")
        if not isinstance(source, str) or not isinstance(sentences, list) or not sentences \
                or not all(isinstance(s, str) for s in sentences) or set(pair) - {
                    "source_sentence", "sentences"}:
            raise InvalidInputError('sentence similarity takes {"source_sentence": str, '
                                    '"sentences": [str, ...]}')
        unknown = set(params) - {"truncation"}
        if unknown:
            raise InvalidInputError(f"unknown parameter(s) {', '.join(sorted(unknown))} for "
                                    "sentence similarity; allowed: truncation")
        return self.cosine(source, sentences, truncate=bool(params.get("truncation")))

    def cosine(self, source: str, sentences: list[str], truncate: bool = False,
               direction: str = "right", prompt_name: str | None = None) -> list[float]:
        """The cosine similarity of each sentence's embedding with the source's (TEI's
        /similarity, the Inference API's sentence-similarity)."""
        vectors = self.embed([source, *sentences], normalize=True, truncate=truncate,
                             direction=direction, prompt_name=prompt_name)
        return [float(x) for x in vectors[1:] @ vectors[0]]

    def token_vectors(self, texts: list[str], truncate: bool = False, direction: str = "right",
                      prompt_name: str | None = None) -> list[np.ndarray]:
        """Every token's vector, special tokens included, one [tokens, hidden] float32 array
        per text (TEI's /embed_all): the encoder's output as it is, not pooled or normalised.
        Texts over the model's positions are an error unless `truncate`."""
        options = {"sentence": False, "tensors": False, "arrays": True,
                   "strategy": "longest_first" if truncate else None,
                   "limit": self.manifest.max_length,
                   "direction": one_of("truncation_direction", direction, ("right", "left"))}
        texts = self.with_prompt(texts, prompt_name)
        self.check_texts(texts, f"{len(texts)} text(s) to embed")
        prepared = self.preprocess(texts, options)
        self.check_cost(prepared, options)
        return [self.postprocess(p, o, options) for p, o in zip(prepared, self.forward(prepared))]

    @property
    def prompts(self) -> dict[str, str]:
        """The bundle's prompts by name (config_sentence_transformers.json's)."""
        return dict(self.sentence_config.get("prompts") or {})

    def with_prompt(self, texts: list[str], prompt_name: str | None = None,
                    prompt: str | None = None) -> list[str]:
        """The texts with their prompt before them, as sentence-transformers applies it: an
        explicit `prompt` first, else the named one, else the bundle's default prompt."""
        if prompt is None and prompt_name is not None:
            if prompt_name not in self.prompts:
                known = ", ".join(sorted(self.prompts)) or "none: this bundle has no prompts"
                raise InvalidInputError(f"prompt_name {prompt_name!r} is not one of the "
                                        f"bundle's prompts ({known})")
            prompt = self.prompts[prompt_name]
        if prompt is None:
            prompt = self.prompts.get(self.sentence_config.get("default_prompt_name") or "")
        return [prompt + t for t in texts] if prompt else texts

    def checked_dimensions(self, dimensions: int | None) -> int | None:
        """`dimensions` within the embedding's width, else a 422 before any work."""
        width = self.bundle.output_width
        if dimensions is not None and not 1 <= dimensions <= width:
            raise InvalidInputError(f"dimensions must be between 1 and {width} (this model's "
                                    f"embedding width), got {dimensions}")
        return dimensions if dimensions != width else None

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens per text as `embed` sees them (stripped, specials included)."""
        return [len(e.ids) for e in self.tokenizer.encode([t.strip() for t in texts])]
