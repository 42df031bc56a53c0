"""The int8 accuracy gate: quantize with each recipe in turn (cheapest first) until the file
agrees with fp32 on the validation text, and record what every recipe scored."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import quantize, validate
from .errors import ExportError

if TYPE_CHECKING:
    from .writers import WriteJob


def int8_with_gate(job: WriteJob) -> tuple[str, list[dict[str, Any]]]:
    """The first recipe whose top-1 agreement (or cosine agreement) with fp32 reaches
    `job.min_agreement`, and every recipe tried; an ExportError with the figures otherwise."""
    from .writers import judge

    ref_sess = validate.onnx_session(job.fp32)
    cache: dict[int, list[Any]] = {}

    def fp32_ref(feed: dict[str, Any]) -> list[Any]:
        if id(feed) not in cache:
            cache[id(feed)] = validate.run_onnx(ref_sess, feed)
        return cache[id(feed)]

    tried = []
    for recipe in quantize.INT8_RECIPES:
        kept, head = quantize.quantize_int8(job.fp32, job.dst, recipe, job.external,
                                            job.config.hidden_size, job.config.intermediate_size)
        cmp = judge(fp32_ref, job.dst, job.feeds, job.spec)
        tried.append({"recipe": recipe.name, "fp32_matmuls": len(kept),
                      "int8_head_gemm": head, **cmp.as_dict()})
        job.log(f"      int8 recipe {recipe.name}: {describe(cmp, job.spec.parity)}")
        if cmp.top1_agreement >= job.min_agreement:
            return recipe.name, tried
    figures = "; ".join(f"{t['recipe']}: {t['top1_agreement']:.4f}" for t in tried)
    raise ExportError(f"int8 accuracy gate failed (agreement with fp32 under "
                      f"{job.min_agreement:.2%} for every recipe: {figures}); export --precision "
                      "fp32 or lower --min-agreement")


def describe(cmp: validate.Comparison, parity: str) -> str:
    """The gate's figure in the measure it judged by."""
    if parity == "cosine":
        return (f"cosine agreement {cmp.top1_agreement:.4f} (share of sentences >= 0.99; "
                f"min cosine {cmp.cosine_min:.4f})")
    return f"top-1 agreement {cmp.top1_agreement:.4f}"
