"""build_bundle(): load -> export -> validate fp32 -> optimize -> quantize (gate) -> validate
-> manifest, written to a temporary folder and renamed into place (never half-overwritten)."""
from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from runtime.manifest import (PRECISION_PROVIDER, PRECISIONS, TOKENIZER_NAME, Manifest,
                              ModelFile, sha256_file, verify_files, write_manifest)

from . import models, onnx_export, optimize, quantize, validate
from .errors import ExportError, ToleranceError
from .tokenizer import save_tokenizer

FP32_ATOL = 1e-4


@dataclasses.dataclass
class ExportOptions:
    """Everything `xlmr export` takes besides model, task and output."""

    precisions: tuple[str, ...] = ("int8",)
    max_length: int | None = None
    opset: int = 17
    optimize: bool | str = "auto"  # "auto": keep the fusions only where they measure faster
    min_agreement: float = 0.99
    validation_file: Path | None = None
    # the bundle's files keep their weights in <file>.data: onnxruntime maps that file instead
    # of copying it (xlm-roberta-base int8: load 1.3 -> 0.4 s, peak RSS 520 -> 168 MB)
    external_data: bool = True
    trace_external_data: bool | None = None  # export's own files; None: when over 2 GB
    keep_fp32: bool = False


def _step(log: Callable[[str], None], n: int, total: int, what: str):
    t0 = time.perf_counter()
    log(f"[{n}/{total}] {what} ...")
    return lambda extra="": log(f"      done in {time.perf_counter() - t0:.1f}s {extra}".rstrip())


def _prepare_output(output: Path) -> Path:
    """A fresh temp folder beside `output`, so the final rename is atomic on one filesystem."""
    parent = output.resolve().parent
    if output.exists() and not output.is_dir():
        raise ExportError(f"output {output} exists and is not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=parent))
    except OSError as exc:
        raise ExportError(f"cannot write to {parent}: {exc.strerror or exc}") from exc


def _readable_by_all(folder: Path) -> None:
    """mkdtemp makes 0700 and onnx writes .data files 0600, but Lambda runs an image as a
    non-root user (and Docker's COPY keeps modes): the bundle is 0755, its files 0644."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o755 if path.is_dir() else 0o644)


def _swap_into_place(tmp: Path, output: Path) -> None:
    _readable_by_all(tmp)
    old = None
    if output.exists():
        old = output.with_name(f".{output.name}.old-{os.getpid()}")
        output.rename(old)
    tmp.rename(output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _file_entry(folder: Path, name: str, precision: str, optimized: bool,
                recipe: str | None) -> ModelFile:
    path = folder / name
    data = path.with_name(name + ".data")
    ext = ({"path": data.name, "size": data.stat().st_size, "sha256": sha256_file(data)},) \
        if data.exists() else ()
    return ModelFile(path=name, precision=precision, provider=PRECISION_PROVIDER[precision],
                     size=path.stat().st_size, sha256=sha256_file(path), external_data=ext,
                     optimized=optimized, recipe=recipe)


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import tokenizers
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "tokenizers": tokenizers.__version__}


def _compare_files(ref_fn, path: Path, feeds, task, names) -> validate.Comparison:
    sess = validate.onnx_session(path)
    acc = validate.Comparison()
    for feed in feeds:
        validate.compare(ref_fn(feed), validate.run_onnx(sess, feed), feed, task, names, acc)
    return acc


def build_bundle(model: str | Path, task: str, output: str | Path,
                 options: ExportOptions | None = None,
                 log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> Manifest:
    """Export `model` for `task` into the bundle folder `output`; returns its manifest."""
    opts = options or ExportOptions()
    bad = [p for p in opts.precisions if p not in PRECISIONS]
    if bad or not opts.precisions:
        raise ExportError(f"unknown precision {bad}; choose from {', '.join(PRECISIONS)}")
    output = Path(output)
    config = _load_config(model)
    task = models.infer_task(config) if task == "auto" else task
    models.check_config(config, task)
    tmp = _prepare_output(output)
    try:
        manifest = _build(model, task, config, tmp, opts, log)
        _swap_into_place(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _print_summary(manifest, output, log)
    return manifest


def _load_config(model: str | Path) -> Any:
    from transformers import AutoConfig

    looks_local = isinstance(model, Path) or str(model).startswith((".", "/", "~"))
    if looks_local and not Path(model).exists():
        raise ExportError(f"model folder not found: {model}")
    try:
        return AutoConfig.from_pretrained(str(model))
    except Exception as exc:
        raise ExportError(f"cannot load a model config from {model!r}: {exc}") from exc


def _build(model_id: str | Path, task: str, config: Any, out: Path, opts: ExportOptions,
           log: Callable[[str], None]) -> Manifest:
    steps = 5 + len(opts.precisions)
    done = _step(log, 1, steps, f"load {model_id} ({config.model_type}, {task})")
    tok_info = save_tokenizer(model_id, out / TOKENIZER_NAME)
    torch_model = models.load_model(model_id, task)
    specials = tok_info["special_tokens"]
    mask_id = specials.get("mask", {}).get("id")
    pad_id = config.pad_token_id if config.pad_token_id is not None else 1
    limit = config.max_position_embeddings - pad_id - 1
    max_length = min(x for x in (limit, opts.max_length, tok_info["model_max_length"]) if x)
    done()

    done = _step(log, 2, steps, "export to ONNX (TorchScript exporter)")
    work = out / ".work"
    work.mkdir()
    fp32_raw = onnx_export.export_onnx(torch_model, task, work / "model.raw.onnx", mask_id,
                                       opts.opset, opts.trace_external_data)
    external = (work / "model.raw.onnx.data").exists()
    done()

    done = _step(log, 3, steps, "validate fp32 against PyTorch")
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(out / TOKENIZER_NAME))
    texts = validate.read_texts(opts.validation_file)
    feeds = list(validate.encode_batches(tokenizer, texts, task, mask_id, pad_id, max_length))
    names = models.TASK_SPECS[task].outputs
    wrapper = models.OnnxWrapper(torch_model, task, mask_id).eval()
    torch_cache: dict[int, list] = {}

    def torch_ref(feed):
        key = id(feed)
        if key not in torch_cache:
            torch_cache[key] = validate.run_torch(wrapper, feed)
        return torch_cache[key]

    raw_cmp = _compare_files(torch_ref, fp32_raw, feeds, task, names)
    if raw_cmp.max_abs_diff > FP32_ATOL:
        raise ToleranceError(f"fp32 ONNX differs from PyTorch by {raw_cmp.max_abs_diff:.2e} "
                             f"(atol {FP32_ATOL:.0e})")
    done(f"max|diff| {raw_cmp.max_abs_diff:.1e}")

    fp32 = fp32_raw
    fused: dict[str, int] = {}
    timing: dict[str, float] = {}
    if opts.optimize:
        done = _step(log, 4, steps, "optimize (onnxruntime transformer fusions)")
        fused_path = work / "model.opt.onnx"
        fused = optimize.optimize(fp32_raw, fused_path, config.num_attention_heads,
                                  config.hidden_size, external)
        opt_cmp = _compare_files(torch_ref, fused_path, feeds, task, names)
        if opts.optimize == "auto":  # forced fusions (--force-optimize) need no timing
            probe = max(feeds, key=lambda f: f["input_ids"].size)
            timing = {"unfused_ms": optimize.median_latency_ms(fp32_raw, probe),
                      "fused_ms": optimize.median_latency_ms(fused_path, probe)}
        if opt_cmp.max_abs_diff > FP32_ATOL:
            log(f"      fused graph off by {opt_cmp.max_abs_diff:.1e}: keeping the unfused one")
            fused = {}
        elif timing and timing["fused_ms"] >= timing["unfused_ms"]:
            log(f"      fusions do not help here ({timing['fused_ms']:.1f} ms fused vs "
                f"{timing['unfused_ms']:.1f} ms): keeping the unfused graph")
            fused = {}
        else:
            fp32 = fused_path
        done(", ".join(f"{k} {v}" for k, v in fused.items()) + (
            f" ({timing['unfused_ms']:.1f} -> {timing['fused_ms']:.1f} ms)" if timing else ""))

    parity: dict[str, Any] = {"atol": FP32_ATOL, "reference": "pytorch",
                              "batches": len(feeds), "fused_ops": fused, "optimize": timing}
    files: list[ModelFile] = []
    for n, precision in enumerate(opts.precisions, start=5):
        done = _step(log, n, steps, f"{precision}")
        name = f"model.{precision}.onnx"
        recipe, ext = None, opts.external_data  # every writer saves the bundle's layout once
        try:
            if precision == "fp32":
                _copy_model(fp32, out / name, ext)
            elif precision == "int8":
                recipe, tried = _int8_with_gate(fp32, out / name, ext, feeds, task, names,
                                                opts.min_agreement, config, log)
                parity["int8_recipes_tried"] = tried
            elif precision == "fp16":
                quantize.convert_fp16(fp32, out / name, ext)
            elif precision == "int4":
                quantize.quantize_int4(fp32, out / name, ext)
        except ValueError as exc:
            if ext:
                raise
            raise ExportError(f"{name} cannot hold its weights inline ({exc}); "
                              "drop --inline-weights") from exc  # protobuf's 2 GB limit
        cmp = _compare_files(torch_ref, out / name, feeds, task, names)
        if precision == "fp32" and cmp.max_abs_diff > FP32_ATOL:
            raise ToleranceError(f"fp32 bundle file differs from PyTorch by {cmp.max_abs_diff:.2e}")
        parity[precision] = cmp.as_dict()
        files.append(_file_entry(out, name, precision, bool(fused), recipe))
        done(f"top-1 {cmp.top1_agreement:.3f}, max|diff| {cmp.max_abs_diff:.1e}")

    n = steps
    done = _step(log, n, steps, "write manifest")
    shutil.rmtree(work)
    tok_path = out / TOKENIZER_NAME
    manifest = Manifest(
        task=task, architecture=config.model_type, source_model=str(model_id),
        source_revision=getattr(config, "_commit_hash", None), max_length=int(max_length),
        inputs=onnx_export.INPUT_NAMES, outputs=names, files=tuple(files),
        special_tokens=specials,
        tokenizer={"file": TOKENIZER_NAME, "size": tok_path.stat().st_size,
                   "sha256": sha256_file(tok_path),
                   "clean_up_tokenization_spaces": tok_info["clean_up_tokenization_spaces"]},
        id2label={int(k): v for k, v in config.id2label.items()} if task in _LABELLED else None,
        label2id=dict(config.label2id) if task in _LABELLED else None,
        problem_type=getattr(config, "problem_type", None),
        sentence_embedding=_sentence_embedding(model_id) if task == "feature-extraction" else None,
        parity=parity, versions=_versions(),
    )
    write_manifest(manifest, out)
    verify_files(manifest, out)
    done()
    return manifest


_LABELLED = ("text-classification", "zero-shot-classification", "token-classification")


def _copy_model(src: Path, dst: Path, external: bool) -> None:
    """The fp32 work file as a bundle file, weights inline or in `<dst>.data`."""
    if not external and not src.with_name(src.name + ".data").exists():
        shutil.copyfile(src, dst)
        return
    import onnx  # the graph names its data file: re-save under the new name

    onnx_export.save_onnx(onnx.load(str(src)), dst, external_data=external)


def _int8_with_gate(fp32: Path, dst: Path, external: bool, feeds, task, names,
                    threshold: float, config: Any, log) -> tuple[str, list[dict[str, Any]]]:
    """Try the int8 recipes in order until top-1 agreement with fp32 reaches `threshold`."""
    ref_sess = validate.onnx_session(fp32)
    cache: dict[int, list] = {}

    def fp32_ref(feed):
        if id(feed) not in cache:
            cache[id(feed)] = validate.run_onnx(ref_sess, feed)
        return cache[id(feed)]

    tried = []
    for recipe in quantize.INT8_RECIPES:
        kept, head = quantize.quantize_int8(fp32, dst, recipe, external, config.hidden_size,
                                            config.intermediate_size)
        cmp = _compare_files(fp32_ref, dst, feeds, task, names)
        tried.append({"recipe": recipe.name, "fp32_matmuls": len(kept),
                      "int8_head_gemm": head, **cmp.as_dict()})
        log(f"      int8 recipe {recipe.name}: top-1 agreement {cmp.top1_agreement:.4f}")
        if cmp.top1_agreement >= threshold:
            return recipe.name, tried
    figures = "; ".join(f"{t['recipe']}: {t['top1_agreement']:.4f}" for t in tried)
    raise ExportError(f"int8 accuracy gate failed (top-1 agreement with fp32 under "
                      f"{threshold:.2%} for every recipe: {figures}); export --precision fp32 "
                      "or lower --min-agreement")


def _sentence_embedding(model_id: str | Path) -> dict[str, Any] | None:
    """sentence-transformers pooling/normalize settings, when the checkpoint folder has them."""
    import json

    folder = Path(model_id)
    pooling = folder / "1_Pooling" / "config.json"
    if not pooling.is_file():
        return None
    cfg = json.loads(pooling.read_text())
    mode = next((m for m in ("cls", "mean", "max") if cfg.get(f"pooling_mode_{m}_token" if m == "cls"
                 else f"pooling_mode_{m}_tokens")), "mean")
    modules = folder / "modules.json"
    normalize = modules.is_file() and "Normalize" in modules.read_text()
    st_cfg = folder / "sentence_bert_config.json"
    max_seq = json.loads(st_cfg.read_text()).get("max_seq_length") if st_cfg.is_file() else None
    return {"pooling": mode, "normalize": normalize, "max_seq_length": max_seq}


def _print_summary(manifest: Manifest, output: Path, log: Callable[[str], None]) -> None:
    log(f"\nbundle {output} ({manifest.task}, {manifest.architecture}, max_length "
        f"{manifest.max_length})")
    log(f"{'file':<24}{'precision':<10}{'MB':>9}  {'top-1':>7}  {'max|diff|':>10}")
    for f in manifest.files:
        p = manifest.parity.get(f.precision, {})
        mb = (f.size + sum(e["size"] for e in f.external_data)) / 1e6
        log(f"{f.path:<24}{f.precision:<10}{mb:>9.1f}  {p.get('top1_agreement', 0):>7.3f}  "
            f"{p.get('max_abs_diff', 0):>10.2e}")
