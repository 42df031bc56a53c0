"""The accuracy gate (int8 and int4): quantize with each recipe in turn (cheapest first) until
the file agrees with fp32 on the validation text, and record what every recipe scored."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from . import quantize, validate
from .errors import ExportError

if TYPE_CHECKING:
    from .writers import WriteJob


def with_gate(job: WriteJob, precision: str, recipes: Sequence[Any],
              write: Callable[[Any], dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The first recipe whose file (`write(recipe)` writes job.dst, returns what to record)
    agrees with fp32 by the task's measure (top-1 on the rows fp32 can decide, top-k and
    scores for fill-mask, cosine for embeddings) at `job.min_agreement`, and every recipe
    tried with why it was rejected; an ExportError with the figures otherwise."""
    from .writers import judge

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
    figures = "; ".join(f"{t['recipe']}: {t['rejected']}" for t in tried)
    coarser = ", drop --table-bits 4" if job.table_bits == 4 else ""
    raise ExportError(f"{precision} accuracy gate failed (agreement with fp32 under "
                      f"{job.min_agreement:.2%} for every recipe: {figures}); export --precision "
                      f"fp32{coarser} or lower --min-agreement")


def int8_with_gate(job: WriteJob) -> tuple[str, list[dict[str, Any]]]:
    """Dynamic int8 through the gate (quantize.INT8_RECIPES, cheapest first)."""
    def write(recipe: quantize.Int8Recipe) -> dict[str, Any]:
        kept, head, bits = quantize.quantize_int8(
            job.fp32, job.dst, recipe, job.external, job.config.hidden_size,
            job.config.intermediate_size, job.table_bits)
        return {"fp32_matmuls": len(kept), "int8_head_gemm": head, "table_bits": bits}

    return with_gate(job, "int8", quantize.INT8_RECIPES, write)


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
    return out


def describe(cmp: validate.Comparison, parity: str) -> str:
    """The gate's figure in the measure it judged by."""
    if parity == "cosine":
        return (f"cosine agreement {cmp.top1_agreement:.4f} (share of sentences >= 0.99; "
                f"min cosine {cmp.cosine_min:.4f})")
    text = f"top-1 agreement {cmp.top1_agreement:.4f} on {cmp.total} row(s)"
    text += f" ({cmp.ties} near tie(s) not judged)" if cmp.ties else ""
    if cmp.topk_total:
        text += f", top-5 overlap {cmp.topk_overlap:.4f}, score error {cmp.score_error:.4f}"
    return text
