"""build_bundle(): load -> export -> validate fp32 -> optimize -> quantize (gate) -> validate
-> manifest, written to a temporary folder and renamed into place (never half-overwritten)."""
from __future__ import annotations

import dataclasses
import gc
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any, Callable

from ..runtime import precisions as registry
from ..runtime.cpu import cpu_model, isa
from ..runtime.manifest import (
    TOKENIZER_NAME,
    Manifest,
    ModelFile,
    sha256_file,
    verify_files,
    write_manifest,
)
from ..runtime.tasks.spec import INPUT_NAMES, TaskSpec
from . import calibration, gate, job, models, onnx_export, optimize, validate, writers
from .errors import ExportError, ToleranceError
from .preflight import preflight
from .tokenizer import save_tokenizer

FP32_ATOL = 1e-4
# above this much fp32 weight (XL: 14 GB) the fusion probe is skipped and the fusions kept:
# it would write and load each precision's file twice, for minutes and twice the memory
PROBE_MAX_BYTES = 4 * 1024**3


@dataclasses.dataclass
class ExportOptions:
    """Everything `xlmr export` takes besides model, task and output."""

    precisions: tuple[str, ...] = ("int8",)
    max_length: int | None = None
    opset: int = 17
    # "auto": fusions kept per precision unless that precision's graph is clearly slower fused
    optimize: bool | str = "auto"
    min_agreement: float = 0.99
    validation_file: Path | None = None
    # the bundle's files keep their weights in <file>.data: onnxruntime maps that file instead
    # of copying it (docs/design/external-weights.md)
    external_data: bool = True
    model_id: str | None = None  # the public name (default: hub id, or the folder's name)
    trim_corpus: Path | None = None  # keep only the pieces this text needs (export/trim.py)
    keep_top: int = 0  # ... plus the N best-scored pieces
    trim_languages: tuple[str, ...] = ()  # ... plus every piece of these languages' scripts
    table_bits: int = 8  # 4: int8/int4 files keep the word-embedding table in 4-bit blocks


class Steps:
    """Numbered progress lines: `done = steps("what")` ... `done("figures")`."""

    def __init__(self, total: int, log: Callable[[str], None]) -> None:
        self.n, self.total, self.log = 0, total, log

    def __call__(self, what: str) -> Callable[..., None]:
        self.n += 1
        t0 = time.perf_counter()
        self.log(f"[{self.n}/{self.total}] {what} ...")
        return lambda extra="": self.log(
            f"      done in {time.perf_counter() - t0:.1f}s, peak RSS {peak_rss_gb():.2f} GB "
            f"{extra}".rstrip())


def peak_rss_gb() -> float:
    """This process's peak resident memory so far (Linux: ru_maxrss in KiB): each step's line
    shows it, so the step that raised it is the one to look at."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


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
    return ModelFile(path=name, precision=precision, provider=registry.get(precision).provider,
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


def build_bundle(model: str | Path, task: str, output: str | Path,
                 options: ExportOptions | None = None,
                 log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> Manifest:
    """Export `model` for `task` into the bundle folder `output`; returns its manifest."""
    opts = options or ExportOptions()
    preflight(model, task, opts.precisions, opts.trim_languages)
    output = Path(output)
    config = _load_config(model)
    task = models.infer_task(config, model) if task == "auto" else task
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

    try:
        return AutoConfig.from_pretrained(str(model))
    except Exception as exc:
        raise ExportError(f"cannot load a model config from {model!r}: {exc}") from exc


@dataclasses.dataclass
class Source:
    """The checkpoint as loaded for export: model, config and the tokenizer's facts."""

    model_id: str | Path
    spec: TaskSpec
    config: Any
    model: Any  # the torch module, eval mode; None once PyTorch's outputs are cached
    tokenizer: dict[str, Any]  # what save_tokenizer returned
    max_length: int
    vocabulary: dict[str, Any] | None = None  # what a vocabulary trim kept, and its coverage

    @property
    def mask_id(self) -> int | None:
        return self.tokenizer["special_tokens"].get("mask", {}).get("id")

    @property
    def pad_id(self) -> int:
        return self.config.pad_token_id if self.config.pad_token_id is not None else 1


@dataclasses.dataclass
class Reference:
    """The validation feeds and PyTorch's outputs on them (computed once), to judge files by."""

    source: Source
    feeds: list[dict[str, Any]]
    calibration: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    calibration_note: str = ""
    cache: dict[int, list[Any]] = dataclasses.field(default_factory=dict)

    def outputs(self, feed: dict[str, Any]) -> list[Any]:
        """PyTorch's outputs on one of the feeds: computed while the model is loaded (the
        fp32 check runs every feed), cached for every later judgement."""
        if id(feed) not in self.cache:
            wrapper = models.OnnxWrapper(self.source.model, self.source.spec,
                                         self.source.mask_id).eval()
            with models.fp32_compute(self.source.model):
                self.cache[id(feed)] = validate.run_torch(wrapper, feed)
        return self.cache[id(feed)]

    def judge(self, path: Path) -> validate.Comparison:
        return job.judge(self.outputs, path, self.feeds, self.source.spec)


def _build(model_id: str | Path, task: str, config: Any, out: Path, opts: ExportOptions,
           log: Callable[[str], None]) -> Manifest:
    steps = Steps(5 + len(opts.precisions), log)
    done = steps(f"load {model_id} ({config.model_type}, {task})")
    source = load_source(model_id, task, config, out, opts)
    extra = source.spec.output_names[len(models.spec(task).outputs):]
    done(f"with heads {', '.join(extra)}" if extra else "")
    work = out / ".work"
    work.mkdir()
    done = steps("export to ONNX (TorchScript exporter)")
    raw = onnx_export.export_onnx(source.model, source.spec, work / "model.raw.onnx",
                                  source.mask_id, opts.opset)
    done()
    done = steps("validate fp32 against PyTorch")
    ref = Reference(source, *validation_feeds(source, out / TOKENIZER_NAME, opts))
    for feed in ref.feeds:  # PyTorch's outputs first, then the model is let go: PyTorch's
        ref.outputs(feed)  # weights and onnxruntime's are never resident side by side
    source.model = None
    gc.collect()
    cmp = ref.judge(raw)
    if cmp.max_abs_diff > FP32_ATOL:
        raise ToleranceError(f"fp32 ONNX differs from PyTorch by {cmp.max_abs_diff:.2e} "
                             f"(atol {FP32_ATOL:.0e})")
    done(f"max|diff| {cmp.max_abs_diff:.1e}")
    graphs, parity = fuse(raw, work / "model.opt.onnx", ref, opts, steps)
    files = [write_precision(precision, graphs, out, ref, opts, parity, steps)
             for precision in opts.precisions]
    done = steps("write manifest")
    shutil.rmtree(work)
    manifest = bundle_manifest(source, out, tuple(files), parity, opts.model_id)
    write_manifest(manifest, out)
    verify_files(manifest, out)
    done()
    return manifest


def load_source(model_id: str | Path, task: str, config: Any, out: Path,
                opts: ExportOptions) -> Source:
    """The tokenizer saved into the bundle, the model loaded, the length limit worked out
    (the position table, the tokenizer's and the user's, whichever is smallest)."""
    tok_info = save_tokenizer(model_id, out / TOKENIZER_NAME)
    model = models.load_model(model_id, task)
    spec = models.spec(task)
    heads = models.attach_heads(model, model_id, spec)
    if heads and (opts.trim_corpus or opts.trim_languages):
        raise ExportError("a vocabulary trim renumbers the token ids that lexical weights are "
                          "keyed by: export a model with a sparse or ColBERT head untrimmed")
    pad_id = config.pad_token_id if config.pad_token_id is not None else 1
    limit = config.max_position_embeddings - pad_id - 1
    max_length = min(x for x in (limit, opts.max_length, tok_info["model_max_length"]) if x)
    vocabulary = trim_vocabulary(out / TOKENIZER_NAME, model, config, tok_info, opts) \
        if opts.trim_corpus or opts.trim_languages else None
    return Source(model_id, spec.with_heads(heads), config, model, tok_info, int(max_length),
                  vocabulary)


def trim_vocabulary(tokenizer_file: Path, model: Any, config: Any, tok_info: dict[str, Any],
                    opts: ExportOptions) -> dict[str, Any]:
    """Cut the bundle's tokenizer, the model's embedding (and tied head) and the special ids
    to the pieces the corpus needs; returns what the manifest says of it."""
    import json

    from . import trim
    from .languages import scripts_for

    data = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    corpus = trim.corpus_lines(opts.trim_corpus) if opts.trim_corpus else []
    scripts = scripts_for(opts.trim_languages) if opts.trim_languages else None
    kept = trim.choose(data, corpus, opts.keep_top, scripts)
    tokenizer_file.write_text(json.dumps(trim.tokenizer(data, kept), ensure_ascii=False),
                              encoding="utf-8")
    trim.model(model, kept)
    trim.remap_config(config, kept)
    for special in tok_info["special_tokens"].values():
        special["id"] = kept.new_id(special["id"])
    seen = set(corpus)  # held out means not in the corpus: coverage there would be 1 by design
    held_out = [t for t in validate.read_texts(opts.validation_file) if t not in seen]
    return {"kept": len(kept.kept), "of": kept.total, "corpus_lines": len(corpus),
            "keep_top": opts.keep_top, "languages": list(opts.trim_languages),
            "scripts": sorted(scripts or ()),
            "held_out_coverage": trim.coverage(data, kept, held_out) if held_out else None,
            "held_out": f"{len(held_out)} line(s) of " + ("the validation file" if
                                                          opts.validation_file else
                                                          "the built-in multilingual sentences")
            + " not in the corpus"}


def validation_feeds(source: Source, tokenizer_file: Path, opts: ExportOptions,
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """The feeds the checks judge, the calibration feeds (never judged), and where each
    came from (export/calibration.py)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    split = calibration.split_texts(opts.validation_file)

    def encode(texts: list[str]) -> list[dict[str, Any]]:
        return list(validate.encode_batches(tokenizer, texts, source.spec, source.mask_id,
                                            source.pad_id, source.max_length))
    return encode(split.judged), encode(split.calibration), split.note


def fuse(raw: Path, fused_path: Path, ref: Reference, opts: ExportOptions,
         steps: Steps) -> tuple[dict[str, Path], dict[str, Any]]:
    """onnxruntime's fusions, offered when they match PyTorch: the graphs each precision may
    be written from ({"unfused"} or {"unfused", "fused"}, and "fused_cuda", with
    SkipLayerNormalization, where a CUDA precision is asked for) and the parity record so far."""
    parity: dict[str, Any] = {"atol": FP32_ATOL, "reference": "pytorch",
                              "batches": len(ref.feeds), "fused_ops": {}, "optimize": {}}
    if not opts.optimize:
        return {"unfused": raw}, parity
    done = steps("optimize (onnxruntime transformer fusions)")
    config = ref.source.config
    external = raw.with_name(raw.name + ".data").exists()
    fused = optimize.optimize(raw, fused_path, config.num_attention_heads, config.hidden_size,
                              external)
    cmp = ref.judge(fused_path)
    if cmp.max_abs_diff > FP32_ATOL:
        steps.log(f"      fused graph off by {cmp.max_abs_diff:.1e}: keeping the unfused one")
        done()
        return {"unfused": raw}, parity
    parity.update(fused_ops=fused)
    done(", ".join(f"{k} {v}" for k, v in fused.items()))
    graphs = {"unfused": raw, "fused": fused_path}
    if any(registry.get(p).provider != "cpu" for p in opts.precisions):
        # CUDA files keep SkipLayerNormalization, whose CPU kernel alone is slow
        cuda = fused_path.with_name("model.opt_cuda.onnx")
        optimize.optimize(raw, cuda, config.num_attention_heads, config.hidden_size, external,
                          skip_layer_norm=True)
        if ref.judge(cuda).max_abs_diff <= FP32_ATOL:
            graphs["fused_cuda"] = cuda
    return graphs, parity


def choose_graph(precision: str, graphs: dict[str, Path], ref: Reference, opts: ExportOptions,
                 parity: dict[str, Any], work: Path) -> str:
    """Fused or unfused for this precision, decided on this precision's own graph: both
    written (the writer's first recipe), timed in alternating rounds, the fusions kept unless
    clearly slower (optimize.clearly_slower). Where fusions are forced, or the precision is
    for another provider (not timed here), the fused graph (for CUDA: "fused_cuda")."""
    entry = registry.get(precision)
    if "fused" not in graphs or precision in writers.UNFUSED:
        return "unfused"
    if entry.provider != "cpu" and "fused_cuda" in graphs:
        return "fused_cuda"
    if opts.optimize != "auto" or entry.provider != "cpu":
        return "fused"
    too_large = too_large_to_time(graphs["fused"])
    if too_large:
        parity["optimize"][precision] = {
            "kept": "fused", "not_timed": f"{too_large}: both graphs' files are not written to "
            "time them"}
        return "fused"
    files = {}
    for kind, src in graphs.items():
        dst = work / f"probe.{kind}.{precision}.onnx"
        writers.writer_for(entry)(job.WriteJob(
            src, dst, opts.external_data, ref.source.spec, ref.source.config, ref.feeds,
            0.0, lambda line: None, opts.table_bits))
        files[kind] = dst
    probe = max(ref.feeds, key=lambda f: f["input_ids"].size)
    times = optimize.alternating_ms(files, probe)
    kept = "unfused" if optimize.clearly_slower(times["fused"], times["unfused"]) else "fused"
    parity["optimize"][precision] = {"fused_ms": times["fused"], "unfused_ms": times["unfused"],
                                     "kept": kept, "margin": optimize.MARGIN}
    for f in work.glob("probe.*"):
        f.unlink()
    return kept


def too_large_to_time(fp32: Path) -> str:
    """Why files written from `fp32` are too large to keep several and time them, or ""."""
    weights = fp32.with_name(fp32.name + ".data")
    if weights.exists() and weights.stat().st_size > PROBE_MAX_BYTES:
        return (f"fp32 weights {weights.stat().st_size / 1e9:.1f} GB > "
                f"{PROBE_MAX_BYTES / 1e9:.1f} GB")
    return ""


def write_precision(precision: str, graphs: dict[str, Path], out: Path, ref: Reference,
                    opts: ExportOptions, parity: dict[str, Any], steps: Steps) -> ModelFile:
    """One bundle file through the precision's registered writer, from the graph (fused or
    not) chosen for it, then judged against PyTorch; fp32 must match it within FP32_ATOL."""
    done = steps(precision)
    kind = choose_graph(precision, graphs, ref, opts, parity, next(iter(graphs.values())).parent)
    fp32 = graphs[kind]
    t = parity["optimize"].get(precision, {})
    if "fused_ms" in t:
        steps.log(f"      {kind} graph (median of rounds: fused {median(t['fused_ms']):.1f} ms, "
                  f"unfused {median(t['unfused_ms']):.1f} ms)")
    elif "not_timed" in t:
        steps.log(f"      {kind} graph, not timed: {t['not_timed']}")
    name = f"model.{precision}.onnx"
    write = job.WriteJob(fp32, out / name, opts.external_data, ref.source.spec,
                         ref.source.config, ref.feeds, opts.min_agreement, steps.log,
                         opts.table_bits, ref.calibration, ref.calibration_note,
                         too_large_to_time(fp32))
    try:
        result = writers.writer_for(registry.get(precision))(write)
    except ValueError as exc:
        if opts.external_data:
            raise
        raise ExportError(f"{name} cannot hold its weights inline ({exc}); "
                          "drop --inline-weights") from exc  # protobuf's 2 GB limit
    cmp = ref.judge(out / name)
    if precision == "fp32" and cmp.max_abs_diff > FP32_ATOL:
        raise ToleranceError(f"fp32 bundle file differs from PyTorch by {cmp.max_abs_diff:.2e}")
    parity.update(result.parity)
    parity[precision] = cmp.as_dict()
    done(f"{gate.describe(cmp, ref.source.spec.parity)}, max|diff| {cmp.max_abs_diff:.1e}")
    return _file_entry(out, name, precision, kind != "unfused", result.recipe)


def public_id(model: str | Path, given: str | None) -> str:
    """The name the bundle answers to: --model-id, a hub id as it is, or a local folder's
    name (callers never see the export machine's paths)."""
    if given:
        return given
    local = Path(model).expanduser()
    return local.resolve().name if local.exists() else str(model)


def bundle_manifest(source: Source, out: Path, files: tuple[ModelFile, ...],
                    parity: dict[str, Any], model_id: str | None = None) -> Manifest:
    config, spec, tok_path = source.config, source.spec, out / TOKENIZER_NAME
    return Manifest(
        task=spec.name, architecture=config.model_type, source_model=str(source.model_id),
        model_id=public_id(source.model_id, model_id),
        source_revision=getattr(config, "_commit_hash", None), max_length=source.max_length,
        inputs=INPUT_NAMES, outputs=spec.output_names, files=files,
        special_tokens=source.tokenizer["special_tokens"],
        tokenizer={"file": TOKENIZER_NAME, "size": tok_path.stat().st_size,
                   "sha256": sha256_file(tok_path),
                   "clean_up_tokenization_spaces":
                       source.tokenizer["clean_up_tokenization_spaces"]},
        id2label={int(k): v for k, v in config.id2label.items()} if spec.labelled else None,
        label2id=dict(config.label2id) if spec.labelled else None,
        problem_type=getattr(config, "problem_type", None),
        sentence_embedding=_sentence_embedding(source.model_id, heads=spec.output_names[1:])
        if spec.name == "feature-extraction" else None,
        parity=parity, versions=_versions(), tuned_on={"isa": isa(), "cpu": cpu_model()},
        vocabulary=source.vocabulary,
    )


# a checkpoint with BGE-M3's heads and no sentence-transformers config: FlagEmbedding's dense
# vector (BGEM3FlagModel's defaults: CLS, normalised)
M3_DENSE = {"pooling": "cls", "normalize": True, "max_seq_length": None}


def _sentence_embedding(model_id: str | Path, heads: tuple[str, ...] = ()
                        ) -> dict[str, Any] | None:
    """sentence-transformers pooling/normalize settings, when the checkpoint folder has them."""
    import json

    folder = Path(model_id)
    pooling = folder / "1_Pooling" / "config.json"
    if not pooling.is_file():
        return dict(M3_DENSE) if heads else None
    cfg = json.loads(pooling.read_text())
    mode = next((m for m in ("cls", "mean", "max") if cfg.get(f"pooling_mode_{m}_token" if m == "cls"
                 else f"pooling_mode_{m}_tokens")), "mean")
    modules = folder / "modules.json"
    normalize = modules.is_file() and "Normalize" in modules.read_text()
    st_cfg = folder / "sentence_bert_config.json"
    max_seq = json.loads(st_cfg.read_text()).get("max_seq_length") if st_cfg.is_file() else None
    found = {"pooling": mode, "normalize": normalize, "max_seq_length": max_seq}
    st_model = folder / "config_sentence_transformers.json"
    model_cfg = json.loads(st_model.read_text()) if st_model.is_file() else {}
    if model_cfg.get("prompts"):
        if cfg.get("include_prompt") is False:  # pooling that leaves the prompt's tokens out
            raise ExportError("this model's pooling leaves its prompt's tokens out "
                              "(include_prompt: false), which the runtime does not do")
        found["prompts"] = {str(k): str(v) for k, v in model_cfg["prompts"].items()}
        found["default_prompt_name"] = model_cfg.get("default_prompt_name")
    return found


def _print_summary(manifest: Manifest, output: Path, log: Callable[[str], None]) -> None:
    log(f"\nbundle {output} ({manifest.task}, {manifest.architecture}, max_length "
        f"{manifest.max_length})")
    measure = "cosine>=.99" if models.spec(manifest.task).parity == "cosine" else "top-1"
    log(f"{'file':<24}{'precision':<10}{'MB':>9}  {measure:>11}  {'max|diff|':>10}")
    for f in manifest.files:
        p = manifest.parity.get(f.precision, {})
        mb = (f.size + sum(e["size"] for e in f.external_data)) / 1e6
        log(f"{f.path:<24}{f.precision:<10}{mb:>9.1f}  {p.get('top1_agreement', 0):>11.3f}  "
            f"{p.get('max_abs_diff', 0):>10.2e}")
