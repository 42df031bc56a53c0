"""results.json, a Markdown table, a PNG chart and a one-line summary of the ratios."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .ceiling import encoder_flops


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "n": int(a.size)}


def tokens_per_s(result: dict[str, Any], name: str, case: dict[str, Any]) -> float:
    p50_ms = result["contenders"][name]["latency_ms"][case["name"]]["p50"]
    return case["batch"] * case["seq"] / (p50_ms / 1000)


def ratio(result: dict[str, Any], fast: str, slow: str, case: str) -> float | None:
    c = result["contenders"]
    if fast not in c or slow not in c:
        return None
    return c[slow]["latency_ms"][case]["p50"] / c[fast]["latency_ms"][case]["p50"]


def headline_case(result: dict[str, Any]) -> str:
    names = [c["name"] for c in result["cases"]]
    return "b1_s128" if "b1_s128" in names else names[0]


def optimum_int8(result: dict[str, Any]) -> str | None:
    return next((n for n in result["contenders"] if n.startswith("optimum_int8")), None)


def summary(result: dict[str, Any]) -> str:
    case = headline_case(result)
    parts = [f"[{result['machine'].get('isa_level', '?')}] {result['task']} @ {case}"]
    for slow in ("pytorch_fp32", optimum_int8(result), "optimum_fp32"):
        r = ratio(result, "bundle_int8", slow, case) if slow else None
        if r is not None:
            parts.append(f"int8 bundle {r:.2f}x faster than {slow}")
    c = result["contenders"]
    if "bundle_int8" in c and "pytorch_fp32" in c:
        parts.append(f"{c['pytorch_fp32']['file_mb'] / c['bundle_int8']['file_mb']:.1f}x smaller")
        acc = c["bundle_int8"]["accuracy_vs_pytorch_fp32"]
        parts.append(f"int8 cosine to fp32 {acc['cosine_min']:.4f} (min)" if "cosine_min" in acc
                     else f"int8 top-1 agreement {acc['top1_agreement']:.3f}")
    cold = result["cold_start"].get("lambda_handler", {})
    if "seconds" in cold:
        parts.append(f"handler cold start {cold['seconds']:.2f}s / {cold['peak_rss_mb']:.0f} MB")
    return "; ".join(parts)


def held_out_line(result: dict[str, Any]) -> str:
    held = result.get("held_out", {})
    return (f"Accuracy against PyTorch fp32 on held-out text ({held.get('rows', '?')} sentences "
            f"of {held.get('text', '?')}, in none of the export's validation or calibration "
            "text), beside the speed it was reached at.")


def accuracy_header(result: dict[str, Any]) -> str:
    return ("cosine min / share >= 0.99" if result["task"] == "feature-extraction"
            else "top-1 agreement")


def accuracy_cell(acc: dict[str, Any]) -> str:
    if "error" in acc:
        return acc["error"]
    if "cosine_min" in acc:
        return f"{acc['cosine_min']:.4f} / {acc.get('share_ge_0.99', float('nan')):.2f}"
    return f"{acc.get('top1_agreement', float('nan')):.3f}"


def recipe(result: dict[str, Any], name: str) -> str:
    """How a contender's file was quantized: the gate's recipe, Optimum's preset, or fp32."""
    if name.startswith("optimum_int8_"):
        return f"Optimum {name.removeprefix('optimum_int8_')} preset (dynamic)"
    if name.startswith("bundle_"):
        precision = name.removeprefix("bundle_").removesuffix("_no_iobinding")
        files = (result.get("bundle_export") or {}).get("files", [])
        chosen = next((f.get("recipe") for f in files if f["precision"] == precision), None)
        return chosen or precision
    return name.rsplit("_", 1)[-1]


def markdown(result: dict[str, Any]) -> str:
    m, cases = result["machine"], result["cases"]
    lines = [f"# {result['task']}: {result['model']}", "",
             f"Machine: {m.get('cpu_model', m.get('processor'))}, {result['threads']} threads, "
             f"ISA {m.get('isa_level', '?')} (flags: {', '.join(m.get('isa', []))}); "
             f"{result['rounds']} alternating rounds.", "",
             "p50 latency in ms (p90 / p99 in results.json); tokens/s at p50.", "",
             held_out_line(result), "",
             "| contender | recipe | " + accuracy_header(result) + " | file MB | peak RSS MB | "
             + " | ".join(c["name"] for c in cases) +
             " | tokens/s (" + headline_case(result) + ") | max abs diff |",
             "|---|---|---:|---:|---:|" + "---:|" * len(cases) + "---:|---:|"]
    head = next(c for c in cases if c["name"] == headline_case(result))
    for name, c in result["contenders"].items():
        acc = c["accuracy_vs_pytorch_fp32"]
        lines.append(f"| {name} | {recipe(result, name)} | {accuracy_cell(acc)} | "
                     f"{c['file_mb']:.1f} | {c['peak_rss_mb']:.0f} | " +
                     " | ".join(f"{c['latency_ms'][x['name']]['p50']:.1f}" for x in cases) +
                     f" | {tokens_per_s(result, name, head):.0f} | "
                     f"{acc.get('max_abs_diff', float('nan')):.2e} |")
    for k, v in result["missing"].items():
        lines.append(f"| {k} | missing: {v} |")
    lines += ["", "Cold start (process start to first answer):", ""]
    for k, v in result["cold_start"].items():
        lines.append(f"- {k}: " + (f"{v['seconds']:.2f} s, peak RSS {v['peak_rss_mb']:.0f} MB"
                                   if "seconds" in v else v.get("error", "?")))
        if v.get("phases"):  # the handler's own first log line
            lines.append("  - phases (ms; tokenizer, session and verify overlap): " + ", ".join(
                f"{name} {ms:.0f}" for name, ms in v["phases"].items()))
    export = result.get("bundle_export")
    if export:
        lines += ["", "The bundle's export decided (manifest):", ""]
        for f in export["files"]:
            timing = export["parity"].get("optimize", {}).get(f["precision"])
            lines.append(f"- {f['path']}: recipe {f['recipe'] or '-'}, "
                         f"{'fused' if f['optimized'] else 'unfused'}" + (
                             f" (fused {np.median(timing['fused_ms']):.1f} ms vs unfused "
                             f"{np.median(timing['unfused_ms']):.1f} ms, median of rounds)"
                             if timing else ""))
        measure = "cosine agreement" if export["parity"].get("int8_gate", {}).get(
            "measure") == "cosine" else "top-1"
        for t in export["parity"].get("int8_recipes_tried", []):
            lines.append(f"- int8 recipe {t['recipe']}: {measure} {t['top1_agreement']:.3f} on "
                         f"{t.get('judged_rows', '?')} rows ({t.get('near_ties', 0)} near ties)"
                         + (f", top-5 overlap {t['topk_overlap']:.3f}, score error "
                            f"{t['score_error']:.4f}" if "topk_overlap" in t else "")
                         + (f", min cosine {t['cosine_min']:.4f}" if "cosine_min" in t else "")
                         + "".join(f", {t[f'{kind}_matmuls']} {kind} MatMul(s)"
                                   for kind in ("fp32", "nbits8") if t.get(f"{kind}_matmuls"))
                         + (f", {np.median(t['ms']):.1f} ms" if "ms" in t else "")
                         + (f": rejected, {t['rejected']}" if t.get("rejected") else
                            f": superseded, {t['superseded']}" if t.get("superseded") else
                            ": passed"))
        chosen_by = export["parity"].get("int8_gate", {}).get("chosen_by")
        if chosen_by:
            lines.append(f"- int8 chosen: {chosen_by}")
    ceil = result["ceiling"]
    lines += ["", f"Machine ceiling (onnxruntime GEMM 1024^3): fp32 {ceil['fp32_gflops']:.1f} "
              f"GFLOP/s, int8 {ceil['int8_gops']:.1f} GOP/s."]
    cfg = result.get("encoder_config")
    if cfg:
        flops = encoder_flops(cfg, head["batch"], head["seq"])
        for name, c in result["contenders"].items():
            secs = c["latency_ms"][head["name"]]["p50"] / 1000
            top = ceil["int8_gops"] if "int8" in name else ceil["fp32_gflops"]
            lines.append(f"- {name}: {flops / secs / 1e9:.1f} G(FL)OP/s at {head['name']} = "
                         f"{flops / secs / 1e9 / top:.0%} of the "
                         f"{'int8' if 'int8' in name else 'fp32'} ceiling")
    lines += ["", "Summary: " + summary(result), ""]
    return "\n".join(lines)


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len({c["batch"] for c in result["cases"]}), figsize=(11, 4),
                             squeeze=False)
    for ax, batch in zip(axes[0], sorted({c["batch"] for c in result["cases"]})):
        cases = [c for c in result["cases"] if c["batch"] == batch]
        for name, c in result["contenders"].items():
            ax.plot([x["seq"] for x in cases], [c["latency_ms"][x["name"]]["p50"] for x in cases],
                    marker="o", label=name)
        ax.set(title=f"batch {batch}", xlabel="sequence length (tokens)", ylabel="p50 latency (ms)",
               xscale="log", yscale="log")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{result['task']}: {Path(result['model']).name}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(result: dict[str, Any], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (folder / "results.md").write_text(markdown(result))
    try:
        chart(result, folder / "chart.png")
    except ImportError:
        (folder / "chart.png").unlink(missing_ok=True)
