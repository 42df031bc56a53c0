"""`xlmr`: the command line. Thin: parse, call export/, runtime/ or the Lambda adapter, print.
Every expected failure is one line on stderr and exit status 2, never a stack trace."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable


def precision_names() -> tuple[str, ...]:
    """The precision registry's names (runtime/precisions.py), for the export's help."""
    from xlmr_serverless.runtime.precisions import NAMES

    return NAMES


def _value(text: str) -> Any:
    """A parameter value: JSON when it parses (5, true, ["a"]), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _params(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, val = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param takes key=value, got {pair!r}")
        out[key] = _value(val)
    return out


def cmd_export(a: argparse.Namespace) -> None:
    from .export.preflight import preflight

    precisions = tuple(p for chunk in a.precision for p in chunk.split(",") if p) or ("int8",)
    languages = tuple(code.strip() for code in a.trim_languages.split(",") if code.strip())
    preflight(a.model, a.task, precisions, languages, a.table_bits)  # before torch loads
    from .export.build import ExportOptions, build_bundle

    build_bundle(a.model, a.task, a.output, ExportOptions(
        precisions=precisions, max_length=a.max_length, opset=a.opset,
        optimize=False if a.no_optimize else True if a.force_optimize else "auto",
        min_agreement=a.min_agreement,
        validation_file=Path(a.validation_file) if a.validation_file else None,
        external_data=not a.inline_weights, model_id=a.model_id,
        trim_corpus=Path(a.trim_vocab) if a.trim_vocab else None, keep_top=a.keep_top,
        trim_languages=languages, table_bits=a.table_bits))


def cmd_convert(a: argparse.Namespace) -> None:
    from .export.convert import convert_bert_to_roberta

    print(convert_bert_to_roberta(a.src, a.dst))


def cmd_predict(a: argparse.Namespace) -> None:
    from .runtime import load
    from .runtime.jsonable import to_jsonable

    pipe = load(a.bundle, provider=a.provider, precision=a.precision,
                io_binding={"auto": None, "on": True, "off": False}[a.io_binding])
    inputs = _value(a.inputs) if a.inputs.lstrip().startswith(("{", "[")) else a.inputs
    print(json.dumps(to_jsonable(pipe(inputs, **_params(a.param))), ensure_ascii=False, indent=2))


def cmd_demo(a: argparse.Namespace) -> None:
    """The main job end to end: model -> int8 bundle -> one API Gateway request answered."""
    from .export.build import ExportOptions, build_bundle
    from .export.convert import convert_bert_to_roberta, minilm_source

    out = Path(a.output)
    model, task = a.model, a.task
    if model is None:
        model = convert_bert_to_roberta(minilm_source(), out / "all-MiniLM-L6-v2-roberta")
        task = task or "feature-extraction"
        print(f"converted the shipped all-MiniLM-L6-v2 (BERT) to RoBERTa: {model}", file=sys.stderr)
    bundle = out / "bundle"
    manifest = build_bundle(model, task or "auto", bundle, ExportOptions(precisions=("int8",)))
    from .aws_lambda.local import invoke_event, sample_event
    from .aws_lambda.wsgi import http_event

    if manifest.task == "feature-extraction":  # something a person can read: similarities
        body = json.dumps({"inputs": list(DEMO_SENTENCES), "normalize": True}, ensure_ascii=False)
        event = http_event("POST", "/embed", body, {"Content-Type": "application/json"})
        response = invoke_event(bundle, event)
        vectors = json.loads(response["body"])
        print(f"\nPOST /embed through the Lambda handler -> {response['statusCode']}: "
              f"{len(vectors)} vectors of {len(vectors[0])} numbers; cosine similarity:\n")
        print(similarity_table(list(DEMO_SENTENCES), vectors))
        print("(paraphrases score high, unrelated sentences near 0; all-MiniLM-L6-v2 was trained "
              "on English, a multilingual XLM-R embedding model also pairs 1 and 5)")
        print(f"\nraw response (first numbers): [[{', '.join(f'{x:.4f}' for x in vectors[0][:6])}, "
              "...], ...]")
        return
    event = sample_event(bundle, a.text)
    print(f"\nPOST {event['rawPath']} {event['body']}", file=sys.stderr)
    print(json.dumps(invoke_event(bundle, event), indent=2, ensure_ascii=False))


DEMO_SENTENCES = (  # two pairs of paraphrases, and one translation
    "The cat sleeps on the sofa.",
    "A cat is napping on the couch.",
    "The stock market fell sharply today.",
    "Share prices dropped steeply this morning.",
    "Le chat dort sur le canapé.",
)


def similarity_table(texts: list[str], vectors: list[list[float]]) -> str:
    """Cosine similarity of unit vectors as a small text table (rows and columns numbered)."""
    rows = [f"{'':>4}" + "".join(f"{j + 1:>7}" for j in range(len(texts)))]
    for i, (text, a) in enumerate(zip(texts, vectors)):
        sims = [sum(x * y for x, y in zip(a, b)) for b in vectors]
        rows.append(f"{i + 1:>4}" + "".join(f"{s:>7.2f}" for s in sims) + f"   {text}")
    return "\n".join(rows)


def cmd_invoke(a: argparse.Namespace) -> None:
    from .aws_lambda.local import invoke_event

    event = json.loads(Path(a.event).read_text(encoding="utf-8"))
    print(json.dumps(invoke_event(a.bundle, event), indent=2, ensure_ascii=False))


def cmd_serve(a: argparse.Namespace) -> None:
    from .aws_lambda.local import serve

    serve(a.bundle, a.host, a.port)


def cmd_bench(a: argparse.Namespace) -> None:
    _checkout_on_path("benchmarks")
    from benchmarks.harness import main as bench_main

    bench_main(a)


def _checkout_on_path(folder: str) -> None:
    """benchmarks/ is not installed (no serving install carries it): `xlmr bench` runs it from
    the checkout this package was installed from (pip install -e), or says where it lives."""
    root = Path(__file__).resolve().parents[1]
    if not (root / folder / "__init__.py").is_file():
        raise ValueError(f"`xlmr bench` runs from a checkout of the repository ({folder}/ is not "
                         "installed): git clone it, pip install -e '.[export,bench]', run there")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="xlmr", description=__doc__)
    p.add_argument("--version", action="version", version=f"xlmr-serverless {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("export", help="Hugging Face model -> verified ONNX bundle")
    e.add_argument("--model", required=True, help="hub id or local folder")
    e.add_argument("--task", default="auto")
    e.add_argument("--model-id", help="the name /health and /v1/embeddings answer with "
                   "(default: the hub id, or the model folder's name)")
    e.add_argument("--output", required=True)
    e.add_argument("--precision", action="append", default=[],
                   help=f"{', '.join(precision_names())} (default int8); repeat or "
                   "comma-separate")
    e.add_argument("--max-length", type=int)
    e.add_argument("--opset", type=int, default=17)
    e.add_argument("--no-optimize", action="store_true", help="skip onnxruntime's fusions")
    e.add_argument("--force-optimize", action="store_true",
                   help="keep the fusions even where they do not measure faster")
    e.add_argument("--min-agreement", type=float, default=0.99)
    e.add_argument("--validation-file", help="text file, one input a line (accuracy gate)")
    e.add_argument("--trim-vocab", metavar="CORPUS",
                   help="keep only the vocabulary pieces this text (one input a line) needs: "
                        "a smaller embedding, head and tokenizer (XLM-R's Unigram or RoBERTa's "
                        "byte-level BPE)")
    e.add_argument("--keep-top", type=int, default=0,
                   help="with --trim-vocab, also keep the N best-scored pieces (BPE: the N "
                        "first, in merge order)")
    e.add_argument("--trim-languages", metavar="CODES", default="",
                   help="keep every vocabulary piece written in these languages' scripts "
                        "(ISO 639-1, comma-separated: de,fr,ru); combines with --trim-vocab")
    e.add_argument("--table-bits", type=int, default=8,
                   help="4: the int8 and int4 files' word-embedding table (and the tied "
                        "fill-mask head on it) in 4-bit blocks, stored once: a smaller bundle, "
                        "judged by the accuracy gate like any recipe (default 8)")
    e.add_argument("--inline-weights", action="store_true",
                   help="one .onnx file per precision (default: weights in <file>.data, which "
                        "onnxruntime maps: faster, leaner cold start)")
    e.set_defaults(fn=cmd_export)

    c = sub.add_parser("convert-bert", help="BERT checkpoint -> equivalent RoBERTa checkpoint")
    c.add_argument("src")
    c.add_argument("dst")
    c.set_defaults(fn=cmd_convert)

    r = sub.add_parser("predict", help="answer one input from a bundle, as JSON")
    r.add_argument("bundle")
    r.add_argument("inputs", help="text, or JSON for structured inputs")
    r.add_argument("--param", action="append", default=[], help="key=value (value may be JSON)")
    r.add_argument("--provider", default="auto", choices=["auto", "cpu", "cuda"])
    r.add_argument("--precision")
    r.add_argument("--io-binding", default="auto", choices=["auto", "on", "off"],
                   help="bind inputs/outputs on the device (auto: on for CUDA, off on CPU)")
    r.set_defaults(fn=cmd_predict)

    d = sub.add_parser("demo", help="export a model and answer one API request through the handler")
    d.add_argument("--model", help="hub id or folder (default: the shipped all-MiniLM-L6-v2)")
    d.add_argument("--task")
    d.add_argument("--output", default="out")
    d.add_argument("--text", default="XLM-R runs on AWS Lambda. Il fonctionne aussi en français.")
    d.set_defaults(fn=cmd_demo)

    i = sub.add_parser("invoke", help="run the Lambda handler on an event file (as sam local invoke)")
    i.add_argument("--bundle", required=True)
    i.add_argument("--event", required=True)
    i.set_defaults(fn=cmd_invoke)

    s = sub.add_parser("serve", help="answer HTTP on localhost through the handler")
    s.add_argument("--bundle", required=True)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=3000)
    s.set_defaults(fn=cmd_serve)

    b = sub.add_parser("bench", help="benchmark the bundle against PyTorch and Optimum")
    b.add_argument("--model", required=True)
    b.add_argument("--task", required=True)
    b.add_argument("--batch-sizes", default="1,8")
    b.add_argument("--seq-lens", default="16,128,512")
    b.add_argument("--providers", default="cpu")
    b.add_argument("--rounds", type=int, default=5)
    b.add_argument("--output", help="default: benchmarks/results/<ISA-cpu>/<model>-<task>, "
                   "one folder per machine")
    b.add_argument("--min-agreement", type=float, default=0.99,
                   help="int8 accuracy gate of the bundle's export (0 for random-weight models)")
    b.add_argument("--threads", type=int, default=0, help="per contender (default: usable CPUs)")
    b.set_defaults(fn=cmd_bench)
    return p


def _expected_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [ValueError, FileNotFoundError, PermissionError,
                                       json.JSONDecodeError]
    from .runtime.errors import XlmrError

    errs.append(XlmrError)
    from .export.errors import ExportError  # torch-free: reporting an error loads no model code

    errs.append(ExportError)
    return tuple(errs)


def main(argv: list[str] | None = None) -> int:
    from .runtime.session import TELEMETRY_OFF  # before anything imports onnxruntime

    for var, value in {"TOKENIZERS_PARALLELISM": "false", **TELEMETRY_OFF}.items():
        os.environ.setdefault(var, value)
    args = build_parser().parse_args(argv)
    fn: Callable[[argparse.Namespace], None] = args.fn
    try:
        fn(args)
    except ImportError as exc:
        print(f"xlmr: error: {exc.name or exc} is not installed: pip install "
              "'xlmr-serverless[export]'", file=sys.stderr)
        return 2
    except _expected_errors() as exc:
        print(f"xlmr: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
