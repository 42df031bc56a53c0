"""feature-extraction as transformers returns it ([1, seq, hidden] per input, specials
included), sentence embeddings as sentence-transformers computes them (strip, truncate to
max_seq_length, pool, normalize) through `embed` or the `pooling`/`normalize` parameters, and
BGE-M3's dense, sparse and ColBERT outputs as FlagEmbedding's BGEM3FlagModel gives them
(`encode`, `compute_score`, or the `return_*` parameters) where the bundle has those heads."""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .. import retrieval
from ..budget import FLOAT_JSON_BYTES, INT_JSON_BYTES
from ..errors import InputTooLongError, InvalidInputError
from ..ops import l2_normalize, pool
from ..parameters import BOOL, POSITIVE_INT, choice, either, kwargs, nullable
from ..pipeline import Options, Pipeline, Prepared, RowOutputs, one_of
from .spec import Output, TaskSpec

POOLINGS = ("cls", "mean", "max")
TRUNCATION = nullable(either(BOOL, choice("longest_first", "do_not_truncate")))

# what FlagEmbedding's encode can return, by its flag: (its key, the graph output it needs)
RETURNS = {"return_dense": ("dense_vecs", "last_hidden_state"),
           "return_sparse": ("lexical_weights", "token_weights"),
           "return_colbert_vecs": ("colbert_vecs", "colbert_vecs")}
# a lexical weight as JSON: its token id as a key, and the weight
LEXICAL_JSON_BYTES = INT_JSON_BYTES + 4 + FLOAT_JSON_BYTES

SPEC = TaskSpec(
    name="feature-extraction", auto_class="AutoModel", head=None,
    outputs=(Output("last_hidden_state", ("batch", "sequence", None)),), parity="cosine",
    # BGE-M3's sparse_linear.pt (ReLU'd, one weight per token) and colbert_linear.pt
    heads=(Output("token_weights", ("batch", "sequence"), parity="sparse"),
           Output("colbert_vecs", ("batch", "sequence", None), parity="vectors")),
    truncation={"truncation": True},
    routes=("/predict", "/embed", "/embed_all", "/embed_sparse", "/v1/embeddings",
            "/similarity"),
    natural_route="/embed",
    sample={"inputs": "XLM-R runs on AWS Lambda."},
    parameters={"truncation": TRUNCATION,
                "tokenize_kwargs": kwargs(truncation=TRUNCATION, max_length=POSITIVE_INT),
                "return_tensors": BOOL, "pooling": nullable(choice(*POOLINGS)),
                "normalize": nullable(BOOL), **{flag: BOOL for flag in RETURNS}},
    optimum_class="ORTModelForFeatureExtraction")


class FeatureExtractionPipeline(Pipeline):
    spec = SPEC

    def sanitize(self, params: dict[str, Any]) -> Options:
        """Token embeddings (the pipeline's output) unless `pooling` or `normalize` asks for
        sentence embeddings, which follow sentence-transformers' settings from the bundle, and
        the `return_*` flags ask for FlagEmbedding's outputs."""
        if any(flag in params for flag in RETURNS):
            return self.retrieval_options({f: params.get(f, False) for f in RETURNS},
                                          bool(params.get("truncation")))
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

    def retrieval_options(self, returns: dict[str, bool], truncate: bool,
                          direction: str = "right", limit: int | None = None) -> Options:
        """FlagEmbedding's encode: the outputs asked for (each needs its head in the
        bundle), texts as given (not stripped), the model's positions as the limit."""
        asked = tuple(f for f, on in returns.items() if on)
        if not asked:
            raise InvalidInputError("ask for at least one of " + ", ".join(RETURNS))
        missing = [f for f in asked if RETURNS[f][1] not in self.manifest.outputs]
        if missing:
            heads = ", ".join(f for f in RETURNS if RETURNS[f][1] in self.manifest.outputs)
            raise InvalidInputError(f"{', '.join(missing)}: this bundle has no such head "
                                    f"(it answers {heads}; BGE-M3's sparse_linear.pt and "
                                    "colbert_linear.pt give the others)")
        positions = self.manifest.max_length
        return {"sentence": False, "retrieval": asked,
                "strategy": "longest_first" if truncate or limit else None,
                "limit": min(limit or positions, positions),
                "direction": one_of("truncation_direction", direction, ("right", "left"))}

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
        if "retrieval" in options:
            return self.retrieval_outputs(prepared, outputs[0], options)
        hidden = outputs[0][0]
        if options["sentence"]:
            vector = pool(hidden[None], np.ones((1, len(hidden))), options["pooling"])[0]
            vector = vector[:options["dimensions"]] if options.get("dimensions") else vector
            vector = l2_normalize(vector) if options["normalize"] else vector
            return vector.astype(np.float32) if options.get("arrays") else vector.tolist()
        if options.get("arrays"):  # token_vectors: one [tokens, hidden] array per input
            return hidden.astype(np.float32)
        return hidden[None] if options["tensors"] else [hidden.tolist()]

    def retrieval_outputs(self, prepared: Prepared, row: RowOutputs,
                          options: Options) -> dict[str, Any]:
        """One text's FlagEmbedding outputs: the dense vector (the bundle's pooling and
        normalisation), lexical weights by token id, ColBERT vectors past CLS."""
        asked, arrays, cfg = options["retrieval"], options.get("arrays"), self.sentence_config
        out: dict[str, Any] = {}
        if "return_dense" in asked:
            hidden = row[0]
            vector = pool(hidden[None], np.ones((1, len(hidden))), cfg["pooling"])[0]
            vector = (l2_normalize(vector) if cfg["normalize"] else vector).astype(np.float32)
            out["dense_vecs"] = vector if arrays else vector.tolist()
        if "return_sparse" in asked:
            out["lexical_weights"] = retrieval.lexical_weights(
                row[self.output_index("token_weights")], prepared.rows[0], self.unused_ids)
        if "return_colbert_vecs" in asked:
            vecs = retrieval.colbert_vectors(row[self.output_index("colbert_vecs")],
                                             cfg["normalize"])
            out["colbert_vecs"] = vecs if arrays else vecs.tolist()
        return out

    def collate(self, results: list[Any], shape: Any, options: Options) -> Any:
        """FlagEmbedding's answer for the `return_*` flags: one dict of its three keys (None
        where not asked), each a list over the inputs (one value for a single text)."""
        if "retrieval" not in options:
            return super().collate(results, shape, options)
        merged: dict[str, Any] = {}
        for key, _ in RETURNS.values():
            values: Any = [r[key] for r in results] if key in results[0] else None
            if values is not None and key == "dense_vecs" and options.get("arrays"):
                values = np.stack(values)
            merged[key] = values if values is None or shape else values[0]
        return merged

    @functools.cached_property
    def unused_ids(self) -> set[int]:
        """The special tokens FlagEmbedding leaves out of lexical weights."""
        return {self.bundle.specials[s] for s in retrieval.UNUSED_SPECIALS
                if s in self.bundle.specials}

    def answer_bytes(self, prepared: Prepared, options: Options) -> int:
        """Token embeddings are tokens x hidden floats; a sentence embedding hidden floats;
        FlagEmbedding's outputs a dense vector, a weight per token and a ColBERT vector per
        token, as asked."""
        if "retrieval" in options:
            tokens, asked = sum(len(r) for r in prepared.rows), options["retrieval"]
            total = 0
            for f in asked:
                width = self.bundle.output_shapes[self.output_index(RETURNS[f][1])][-1]
                per = LEXICAL_JSON_BYTES if f == "return_sparse" else FLOAT_JSON_BYTES * (
                    width if isinstance(width, int) else self.bundle.output_width)
                total += (1 if f == "return_dense" else tokens) * per
            return total
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
        per text (TEI's /embed_all): the encoder's output as it is, not pooled or normalised;
        for a bundle with a ColBERT head, its multi-vectors ([tokens - 1, dim], as `encode`).
        Texts over the model's positions are an error unless `truncate`."""
        if "colbert_vecs" in self.heads:
            return self.encode(texts, return_dense=False, return_colbert_vecs=True,
                               truncate=truncate, direction=direction,
                               prompt_name=prompt_name)["colbert_vecs"]
        options = {"sentence": False, "tensors": False, "arrays": True,
                   "strategy": "longest_first" if truncate else None,
                   "limit": self.manifest.max_length,
                   "direction": one_of("truncation_direction", direction, ("right", "left"))}
        texts = self.with_prompt(texts, prompt_name)
        self.check_texts(texts, f"{len(texts)} text(s) to embed")
        prepared = self.preprocess(texts, options)
        self.check_cost(prepared, options)
        return [self.postprocess(p, o, options) for p, o in zip(prepared, self.forward(prepared))]

    def encode(self, texts: list[str] | str, return_dense: bool = True,
               return_sparse: bool = False, return_colbert_vecs: bool = False,
               truncate: bool = False, direction: str = "right", max_length: int | None = None,
               prompt_name: str | None = None, prompt: str | None = None) -> dict[str, Any]:
        """BGEM3FlagModel.encode's answer: {"dense_vecs": [n, dim] float32, "lexical_weights":
        [{token id: weight}], "colbert_vecs": [[tokens - 1, dim] float32]}, None where not
        asked; one text gives one value each. Texts over the model's positions are an error
        unless `truncate` (or `max_length`, which truncates to it)."""
        single = isinstance(texts, str)
        items = [texts] if isinstance(texts, str) else list(texts)
        options = {**self.retrieval_options(
            {"return_dense": return_dense, "return_sparse": return_sparse,
             "return_colbert_vecs": return_colbert_vecs}, truncate, direction, max_length),
            "arrays": True}
        items = self.with_prompt(items, prompt_name, prompt)
        self.check_texts(items, f"{len(items)} text(s) to encode")
        prepared = self.preprocess(items, options)
        self.check_cost(prepared, options)
        return self.collate([self.postprocess(p, o, options)
                             for p, o in zip(prepared, self.forward(prepared))], not single,
                            options)

    def embed_sparse(self, texts: list[str], truncate: bool = False, direction: str = "right",
                     prompt_name: str | None = None) -> list[list[dict[str, float | int]]]:
        """TEI's /embed_sparse: each text's non-zero weights as [{"index": token id,
        "value"}], by index (BGE-M3's lexical weights)."""
        if "token_weights" not in self.heads:
            raise InvalidInputError("this bundle has no sparse head (BGE-M3's "
                                    "sparse_linear.pt gives one)")
        lexical = self.encode(texts, return_dense=False, return_sparse=True, truncate=truncate,
                              direction=direction, prompt_name=prompt_name)["lexical_weights"]
        return [retrieval.sparse_pairs(w) for w in lexical]

    def compute_score(self, sentence_pairs: list[tuple[str, str]] | tuple[str, str],
                      weights_for_different_modes: list[float] | None = None,
                      max_query_length: int | None = None,
                      max_passage_length: int | None = None) -> dict[str, Any]:
        """BGEM3FlagModel.compute_score: each (query, passage) pair's dense, sparse and ColBERT
        scores and their weighted sums (`weights_for_different_modes`: dense, sparse,
        colbert; default equal). One pair gives floats, a list of pairs lists."""
        single = bool(sentence_pairs) and isinstance(sentence_pairs[0], str)
        pairs: list[Any] = [sentence_pairs] if single else list(sentence_pairs)
        if not pairs or not all(isinstance(p, (tuple, list)) and len(p) == 2 and
                                all(isinstance(t, str) for t in p) for p in pairs):
            raise InvalidInputError("sentence_pairs must be (query, passage) pairs of strings")
        weights = tuple(weights_for_different_modes or (1.0, 1.0, 1.0))
        if len(weights) != 3 or sum(weights) <= 0:
            raise InvalidInputError("weights_for_different_modes takes 3 weights (dense, "
                                    "sparse, colbert) with a positive sum")
        q, d = (self.encode([p[side] for p in pairs], return_dense=True, return_sparse=True,
                            return_colbert_vecs=True, max_length=limit)
                for side, limit in ((0, max_query_length), (1, max_passage_length)))
        rows = [retrieval.combined_scores(
            float(q["dense_vecs"][i] @ d["dense_vecs"][i]),
            retrieval.lexical_score(q["lexical_weights"][i], d["lexical_weights"][i]),
            retrieval.colbert_score(q["colbert_vecs"][i], d["colbert_vecs"][i]),
            (float(weights[0]), float(weights[1]), float(weights[2])))
            for i in range(len(pairs))]
        return {k: rows[0][k] if single else [r[k] for r in rows] for k in retrieval.SCORE_MODES}

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
