"""The accuracy gate: a quantized file ships only if it agrees with fp32 on the validation
text. int4 takes the first recipe that passes (fastest first); int8 looks for the fastest
file that passes (all int8, smoothed, or mixed precision from the sensitivity pass), and
records what every recipe scored."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

from . import calibration, per_token, quantize, sensitivity, smoothing, validate
from .errors import ExportError
from .job import WriteJob, judge


def with_gate(job: WriteJob, precision: str, recipes: Sequence[Any],
              write: Callable[[Any], dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The first recipe whose file (`write(recipe)` writes job.dst, returns what to record)
    agrees with fp32 by the task's measure (top-1 on the rows fp32 can decide, top-k and
    scores for fill-mask, cosine for embeddings) at `job.min_agreement`, and every recipe
    tried with why it was rejected; an ExportError with the figures otherwise."""
    ref_sess = validate.onnx_session(job.fp32)  # fp32's outputs once, its session let go
    cache = {id(feed): validate.run_onnx(ref_sess, feed) for feed in job.feeds}
    del ref_sess

    def fp32_ref(feed: dict[str, Any]) -> list[Any]:
        return cache[id(feed)]

    tried = []
    for recipe in recipes:
        extra = write(recipe)
        cmp = judge(fp32_ref, job.dst, job.feeds, job.spec)
        rejected = cmp.verdict(job.min_agreement, job.spec.parity)
        tried.append({"recipe": recipe.name, **extra, **cmp.as_dict(),
                      **({"rejected": rejected} if rejected else {})})
        job.log(f"      {precision} recipe {recipe.name}: {describe(cmp, job.spec.parity)}"
                + (f": rejected, {rejected}" if rejected else ""))
        if rejected is None:
            return recipe.name, tried
    raise _failed(job, precision, tried)


def _failed(job: WriteJob, precision: str, tried: list[dict[str, Any]]) -> ExportError:
    figures = "; ".join(f"{t['recipe']}: {t['rejected']}" for t in tried if "rejected" in t)
    coarser = ", drop --table-bits 4" if job.table_bits == 4 else ""
    return ExportError(f"{precision} accuracy gate failed (agreement with fp32 under "
                       f"{job.min_agreement:.2%} for every recipe: {figures}); export --precision "
                       f"fp32{coarser} or lower --min-agreement")


@dataclasses.dataclass
class Trial:
    """One int8 recipe written and judged: its file (kept while it is a candidate) and record."""

    recipe: quantize.Int8Recipe
    path: Path
    record: dict[str, Any]
    passed: bool
    error: float  # relative output error on the calibration text


class Int8Search:
    """The int8 gate's state: fp32's outputs on the judged and calibration feeds (computed
    once), the smoothed fp32 graphs (made on first use), and every trial so far."""

    def __init__(self, job: WriteJob) -> None:
        self.job = job
        self.work = Path(job.fp32).resolve().parent
        sess = validate.onnx_session(job.fp32)
        self.judged = {id(feed): validate.run_onnx(sess, feed) for feed in job.feeds}
        self.calibrated = [validate.run_onnx(sess, feed) for feed in job.calibration]
        del sess
        self.sources: dict[str, Path] = {"": job.fp32}
        self.smoothed: dict[str, list[dict[str, Any]]] = {}
        self.per_token: dict[str, dict[str, float]] = {}
        self.trials: list[Trial] = []

    def source(self, recipe: quantize.Int8Recipe) -> Path:
        """The fp32 graph a recipe quantizes: as exported, or smoothed on calibration ranges."""
        if recipe.smooth in self.sources:
            return self.sources[recipe.smooth]
        from .external import load_graph

        sites = smoothing.sites(load_graph(self.job.fp32), recipe.smooth)
        ranges = calibration.channel_absmax(self.job.fp32, self.job.calibration,
                                            [site.tensor for site in sites])
        dst = self.work / f"smoothed.{recipe.smooth}.onnx"
        self.smoothed[recipe.smooth] = smoothing.smooth(self.job.fp32, dst, sites, ranges)
        self.sources[recipe.smooth] = dst
        return dst

    def token_spread(self, which: str) -> dict[str, float]:
        """The MatMuls a per-token recipe (`which`) writes per token, each with why: its
        input's largest token peak over the median one (calibration text; for the manifest)."""
        if which not in self.per_token:
            from .external import load_graph

            cfg = self.job.config
            nodes = per_token.matmuls(load_graph(self.job.fp32), which, cfg.hidden_size,
                                      cfg.intermediate_size)
            self.per_token[which] = per_token.token_spread(self.job.fp32, self.job.calibration,
                                                           nodes) if nodes else {}
        return self.per_token[which]

    def applies(self, recipe: quantize.Int8Recipe) -> bool:
        """Whether a recipe can be written: smoothing and per-token scales read calibration
        text (per-token scales: to record why), and per-token scales need a MatMul."""
        if (recipe.smooth or recipe.per_token) and not self.job.calibration:
            return False
        return not recipe.per_token or bool(self.token_spread(recipe.per_token))

    def write(self, recipe: quantize.Int8Recipe, dst: Path, tables: bool = True) -> dict[str, Any]:
        kept, head, bits = quantize.quantize_int8(
            self.source(recipe), dst, recipe, True, self.job.config.hidden_size,
            self.job.config.intermediate_size, self.job.table_bits, tables)
        rows = [n for n in self.per_token.get(recipe.per_token, ()) if n not in kept]
        return {f"{recipe.apart_as}_matmuls": len(kept), "int8_head_gemm": head,
                "table_bits": bits, **({"per_token_matmuls": len(rows)} if rows else {})}

    def attempt(self, recipe: quantize.Int8Recipe) -> Trial:
        """Write `recipe`'s file and judge it on the gate's feeds and, by the same measure, on
        the calibration feeds too (a recipe fitted there, such as a mixed-precision prefix
        that barely passes 16 sentences, must not fail the other text); score it on
        calibration."""
        path = self.work / f"int8.candidate{len(self.trials)}.onnx"
        extra = self.write(recipe, path)
        cmp = judge(lambda feed: self.judged[id(feed)], path, self.job.feeds, self.job.spec)
        rejected = cmp.verdict(self.job.min_agreement, self.job.spec.parity)
        calibrated = calibration.outputs(path, self.job.calibration)  # one run, two uses
        if rejected is None and self.job.calibration:
            also = validate.Comparison()
            for ref, got, feed in zip(self.calibrated, calibrated, self.job.calibration):
                validate.compare(ref, got, feed, self.job.spec, also)
            reason = also.verdict(self.job.min_agreement, self.job.spec.parity)
            rejected = f"on the calibration text, {reason}" if reason else None
        error = calibration.output_error(self.calibrated, calibrated, self.job.calibration)
        record = {"recipe": recipe.name, **extra, **cmp.as_dict(),
                  "calibration_error": round(error, 5),
                  **({"rejected": rejected} if rejected else {})}
        self.job.log(f"      int8 recipe {recipe.name}: {describe(cmp, self.job.spec.parity)}, "
                     f"calibration error {error:.4f}" + (f": rejected, {rejected}" if rejected
                                                         else ""))
        trial = Trial(recipe, path, record, rejected is None, error)
        if not trial.passed:
            _remove(path)
        self.trials.append(trial)
        return trial

    def mixed(self, base: quantize.Int8Recipe) -> tuple[Trial | None, sensitivity.Ranking]:
        """The greedy mixed-precision recipe on `base`: nodes ranked by the sensitivity pass
        (calibration text), the shortest prefix of them kept fp32 that passes the gate."""
        from .external import load_graph

        probe = self.work / "int8.probe.onnx"

        def error_without(excluded: list[str]) -> float:
            self.write(dataclasses.replace(base, fp32_nodes=tuple(excluded)), probe, tables=False)
            return calibration.output_error(self.calibrated,
                                            calibration.outputs(probe, self.job.calibration),
                                            self.job.calibration)

        nodes = sensitivity.units(load_graph(self.source(base)))
        self.job.log(f"      sensitivity pass: {len(nodes)} node(s), each kept fp32 in turn "
                     f"on {base.name}")
        ranking = sensitivity.rank(nodes, error_without)
        _remove(probe)
        worst = ranking.worst()
        cuts = dict(ranking.cuts)
        tried: dict[int, Trial] = {}

        def passes(k: int) -> bool:
            recipe = dataclasses.replace(base, name=f"{base.name}+fp32[{k}]",
                                         fp32_nodes=tuple(worst[:k]))
            tried[k] = self.attempt(recipe)
            tried[k].record["fp32_nodes"] = [{"node": n, "error_cut": round(cuts[n], 5)}
                                             for n in worst[:k]]
            return tried[k].passed

        k = sensitivity.shortest_passing(len(worst), passes)
        for j, trial in tried.items():  # longer prefixes of the same ranking: more fp32
            if j != k and trial.passed:
                trial.record["superseded"] = f"fp32[{k}] passes with fewer fp32 nodes"
                _remove(trial.path)
        return (tried[k] if k else None), ranking

    def table_twin(self, base: quantize.Int8Recipe) -> Trial:
        """`base` with its word-embedding table (and a tied head) kept fp32, judged like any
        recipe. The sensitivity pass leaves the table out of its probes, so only this tells a
        failing table from failing MatMuls."""
        return self.attempt(dataclasses.replace(base, name=f"{base.name}+fp32_table",
                                                fp32_table=True, int8_head=False))

    def nbits8_for(self, trial: Trial | None) -> Trial | None:
        """The mixed recipe's nodes as 8-bit MatMulNBits instead of fp32: a candidate too
        (faster than fp32 where it passes)."""
        if trial is None:
            return None
        recipe = trial.recipe
        twin = self.attempt(dataclasses.replace(
            recipe, name=recipe.name.replace("+fp32[", "+nbits8["), apart_as="nbits8"))
        twin.record["nbits8_nodes"] = trial.record["fp32_nodes"]
        return twin


def int8_with_gate(job: WriteJob) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """Dynamic int8 through the gate. The default recipe (all int8, the fastest) is kept when
    it passes, with nothing else tried. Otherwise every all-int8 recipe is tried; if none
    passes, the one with the least calibration error with its word-embedding table fp32; if
    that fails too, the greedy mixed-precision recipe on that one, and the all-FFN-fp32 recipe;
    of those that pass, the fastest on this machine is kept (alternating rounds; an earlier one
    unless a later is clearly faster). Returns the recipe, every trial's record, and what the
    gate found (for the manifest)."""
    search = Int8Search(job)
    found: dict[str, Any] = {"calibration": job.calibration_note}
    passing = [t for t in (search.attempt(r) for r in quantize.INT8_RECIPES[:1]) if t.passed]
    if passing:
        found["chosen_by"] = "the default recipe (all int8) passed: nothing faster to try"
    elif not job.search:  # too large to keep candidates and time them: the first to pass
        for recipe in quantize.INT8_RECIPES[1:] + (quantize.NBITS8_FFN, quantize.FP32_FFN):
            if search.applies(recipe) and search.attempt(recipe).passed:
                passing = [search.trials[-1]]
                break
        found["chosen_by"] = f"the first recipe to pass, in order (not searched: {job.search_off})"
    else:
        calibrated = bool(job.calibration)  # the sensitivity pass reads calibration text
        passing = [t for t in (search.attempt(r) for r in quantize.INT8_RECIPES[1:]
                               if search.applies(r)) if t.passed]
        base = min(search.trials, key=lambda t: t.error)  # the best all-int8 recipe
        if not passing:  # the table's error, which every later recipe keeps, or the MatMuls'?
            passing = [t for t in [search.table_twin(base.recipe)] if t.passed]
            if passing:
                found["chosen_by"] = ("the word-embedding table kept fp32: with it, the "
                                      "all-int8 recipe of least calibration error passed")
        if not passing and calibrated:
            mixed, ranking = search.mixed(base.recipe)
            found["sensitivity"] = {"base": base.recipe.name, **ranking.as_dict()}
            passing = [t for t in (mixed, search.nbits8_for(mixed),
                                   search.attempt(quantize.NBITS8_FFN),
                                   search.attempt(quantize.FP32_FFN)) if t and t.passed]
        elif not passing:
            passing = [t for t in (search.attempt(quantize.NBITS8_FFN),
                                   search.attempt(quantize.FP32_FFN)) if t.passed]
    if search.smoothed:
        found["smoothing"] = {"alpha": smoothing.ALPHA, **search.smoothed}
    if search.per_token:  # per node: its input's largest token peak over the median one
        found["per_token"] = {"token_peak_over_median": search.per_token}
    try:
        if not passing:
            raise _failed(job, "int8", [t.record for t in search.trials])
        chosen = _fastest(job, passing, found) if len(passing) > 1 else passing[0]
        found.setdefault("chosen_by", f"the only recipe that passed: {chosen.recipe.name}")
        from .external import load_graph, save_consolidated

        save_consolidated(load_graph(chosen.path), quantize._fresh(job.dst), search.work,
                          job.external)
    finally:
        for path in [t.path for t in search.trials] + \
                [p for p in set(search.sources.values()) if p != job.fp32]:
            _remove(path)
    return chosen.recipe.name, [t.record for t in search.trials], found


def _fastest(job: WriteJob, passing: list[Trial], found: dict[str, Any]) -> Trial:
    """The passing file that runs fastest on the largest validation feed, timed as the fusion
    probe times (alternating rounds): an earlier trial stays unless a later is clearly faster."""
    from . import optimize

    feed = max(job.feeds, key=lambda f: f["input_ids"].size)
    times = optimize.alternating_ms({str(i): t.path for i, t in enumerate(passing)}, feed)
    best = 0
    for i in range(1, len(passing)):
        if optimize.clearly_slower(times[str(best)], times[str(i)]):
            best = i
    for i, t in enumerate(passing):
        t.record["ms"] = [round(x, 2) for x in times[str(i)]]
    found["chosen_by"] = (f"the fastest of {len(passing)} passing recipes: median ms of "
                          f"alternating rounds on a {'x'.join(map(str, feed['input_ids'].shape))} "
                          f"feed, a later one kept only when clearly faster (margin "
                          f"{optimize.MARGIN:.0%})")
    return passing[best]


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".data").unlink(missing_ok=True)


def int4_with_gate(job: WriteJob) -> tuple[str, list[dict[str, Any]]]:
    """Weight-only int4 through the same gate (quantize.INT4_RECIPES)."""
    def write(recipe: quantize.Int4Recipe) -> dict[str, Any]:
        bits = quantize.quantize_int4(job.fp32, job.dst, job.external, recipe, job.table_bits)
        return {"block_size": recipe.block_size, "fp32_head": recipe.fp32_head,
                "accuracy_level": recipe.accuracy_level, "table_bits": bits}

    return with_gate(job, "int4", quantize.INT4_RECIPES, write)


def rules(job: WriteJob) -> dict[str, Any]:
    """How the gate judged, for the manifest (with the figures of every recipe tried)."""
    out: dict[str, Any] = {"measure": job.spec.parity, "min_agreement": job.min_agreement}
    if job.spec.parity != "cosine":
        out["tie_margin"] = validate.TIE_MARGIN
    if job.spec.parity == "topk":
        out.update(top_k=validate.TOP_K, min_topk_overlap=validate.MIN_TOPK_OVERLAP,
                   max_score_error=validate.MAX_SCORE_ERROR)
    heads = {o.name: o.parity for o in job.spec.outputs if o.parity}
    if heads:  # each extra head judged by its own measure
        out["outputs"] = heads
        if "sparse" in heads.values():
            out.update(sparse_top=validate.SPARSE_TOP, sparse_tie=validate.SPARSE_TIE,
                       min_topk_overlap=validate.MIN_TOPK_OVERLAP,
                       max_score_error=validate.MAX_SCORE_ERROR)
    return out


def describe(cmp: validate.Comparison, parity: str) -> str:
    """The gate's figure in the measure it judged by (an extra head's in its own)."""
    return "; ".join([_figure(cmp, parity)] + [f"{name}: {_figure(part, part.measure)}"
                                               for name, part in cmp.parts.items()])


def _figure(cmp: validate.Comparison, parity: str) -> str:
    if parity in ("cosine", "vectors"):
        unit = "sentences" if parity == "cosine" else "tokens"
        return (f"cosine agreement {cmp.top1_agreement:.4f} (share of {unit} >= 0.99; "
                f"min cosine {cmp.cosine_min:.4f})")
    if parity == "sparse":
        return (f"top-{validate.SPARSE_TOP} token overlap {cmp.topk_overlap:.4f}, weight "
                f"error {cmp.score_error:.4f} of the largest")
    text = f"top-1 agreement {cmp.top1_agreement:.4f} on {cmp.total} row(s)"
    text += f" ({cmp.ties} near tie(s) not judged)" if cmp.ties else ""
    if cmp.topk_total:
        text += f", top-5 overlap {cmp.topk_overlap:.4f}, score error {cmp.score_error:.4f}"
    return text
