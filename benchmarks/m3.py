"""BGE-M3's three outputs, measured: a base-shaped checkpoint of BGE-M3's structure (random
XLM-R encoder, random sparse and ColBERT layers, the real tokenizer), exported twice (with its
heads, and without: dense only), against FlagEmbedding's BGEM3FlagModel on PyTorch fp32.
Each contender lives in its own process (2 threads) and is asked in turn, round after round;
a call is `encode(texts)` from text to answer (tokenization included). Cases: b1 x 32 tokens
and b8 x 256 tokens. Also the ColBERT answer's JSON size per token.

    python -m benchmarks.m3 [--work benchmarks/models/m3] [--rounds 5] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

from benchmarks.harness import RESULTS, check_same_machine, machine, machine_folder
from benchmarks.worker import peak_rss_mb

ROOT = Path(__file__).resolve().parents[1]
CASES = {"b1x32": (1, 32), "b8x256": (8, 256)}
ITERS = {"b1x32": 20, "b8x256": 3}
ALL = {"return_dense": True, "return_sparse": True, "return_colbert_vecs": True}
DENSE = {"return_dense": True, "return_sparse": False, "return_colbert_vecs": False}
# name -> (kind, which bundle or checkpoint, the outputs asked)
CONTENDERS = {
    "bundle int8, all three": ("bundle", "m3", ALL),
    "bundle int8, dense (same bundle)": ("bundle", "m3", DENSE),
    "bundle int8, dense-only export": ("bundle", "dense", DENSE),
    "FlagEmbedding fp32, all three": ("flag", "checkpoint", ALL),
    "FlagEmbedding fp32, dense": ("flag", "checkpoint", DENSE),
}


def prepare(work: Path) -> dict[str, Path]:
    """The checkpoint and both int8 bundles, made once under `work`."""
    sys.path.insert(0, str(ROOT))
    from tests.factory import make_model
    from xlmr_serverless.export.build import ExportOptions, build_bundle

    ck, m3, dense = work / "checkpoint", work / "bundle-m3", work / "bundle-dense"
    if not (ck / "sparse_linear.pt").is_file():
        make_model(ck, "feature-extraction", hidden=768, layers=12, num_attention_heads=12,
                   intermediate_size=3072, heads="sparse+colbert")
    if not (m3 / "manifest.json").is_file():
        build_bundle(ck, "auto", m3, ExportOptions(precisions=("int8",)))
    if not (dense / "manifest.json").is_file():
        plain = work / "checkpoint-dense"
        if not plain.exists():  # the same encoder, its heads left behind
            plain.mkdir()
            for f in ck.iterdir():
                if not f.name.endswith("_linear.pt"):
                    os.link(f, plain / f.name)
        build_bundle(plain, "auto", dense, ExportOptions(precisions=("int8",)))
    return {"checkpoint": ck, "m3": m3, "dense": dense}


def texts_for(tokenizer_file: Path, rows: int, tokens: int) -> list[str]:
    """`rows` texts of `tokens` tokens each (specials included), cut from the held-out text."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    words = (ROOT / "benchmarks" / "texts" / "held_out.txt").read_text(encoding="utf-8").split()
    words = words * (1 + 4 * tokens // len(words))  # long enough, each row from another word
    out = []
    for r in range(rows):
        ids = tok.encode(" ".join(words[r * 7:r * 7 + 2 * tokens]),
                         add_special_tokens=False).ids[:tokens - 2]
        text = tok.decode(ids)
        while len(tok.encode(text).ids) > tokens:
            text = text.rsplit(" ", 1)[0]
        out.append(text)
    return out


def worker(spec: dict[str, Any]) -> None:
    """One contender: load, then answer {"case", "iters"} lines with the ms of each call."""
    t0 = time.perf_counter()
    asked = spec["asked"]
    if spec["kind"] == "bundle":
        from xlmr_serverless.runtime import load

        pipe: Any = load(spec["path"], threads=2)
        call = lambda texts: pipe.encode(texts, **asked)  # noqa: E731
    else:
        import torch

        torch.set_num_threads(2)
        from FlagEmbedding import BGEM3FlagModel

        model = BGEM3FlagModel(spec["path"], use_fp16=False, devices="cpu", batch_size=8)
        call = lambda texts: model.encode(texts, batch_size=8, max_length=512, **asked)  # noqa: E731
    cases = spec["cases"]
    for texts in cases.values():
        call(texts)  # warm
    print(json.dumps({"load_s": time.perf_counter() - t0}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("op") == "rss":
            print(json.dumps({"peak_rss_mb": peak_rss_mb()}), flush=True)
            continue
        ms = []
        for _ in range(req["iters"]):
            t = time.perf_counter()
            call(cases[req["case"]])
            ms.append((time.perf_counter() - t) * 1000)
        print(json.dumps({"ms": ms}), flush=True)


class Contender:
    def __init__(self, spec: dict[str, Any]) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false",
               "OMP_NUM_THREADS": "2"}
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.m3", "--worker",
                                      json.dumps(spec)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.load_s = self.ask(None)["load_s"]

    def ask(self, req: dict[str, Any] | None) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        if req is not None:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a contender died (exit {self.proc.poll()})")
        return json.loads(line)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def colbert_json_bytes_per_token(bundle: Path, texts: list[str]) -> float:
    """The ColBERT answer as /predict sends it (JSON), per token of the input."""
    from xlmr_serverless.runtime import load

    pipe = load(bundle)
    answer = pipe.serve(texts, return_dense=False, return_colbert_vecs=True)
    tokens = sum(len(e.ids) for e in pipe.tokenizer.encode(texts))
    return len(json.dumps(answer["colbert_vecs"])) / tokens


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "models" / "m3")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=RESULTS / machine_folder() / "m3")
    args = ap.parse_args(argv)
    check_same_machine(args.out)
    paths = prepare(args.work)
    cases = {name: texts_for(paths["m3"] / "tokenizer.json", *shape)
             for name, shape in CASES.items()}
    contenders = {name: Contender({"kind": kind, "path": str(paths[which]), "asked": asked,
                                   "cases": cases})
                  for name, (kind, which, asked) in CONTENDERS.items()}
    ms: dict[str, dict[str, list[float]]] = {n: {c: [] for c in CASES} for n in contenders}
    try:
        for r in range(args.rounds):
            for case in CASES:
                for name, c in contenders.items():
                    ms[name][case].append(median(c.ask({"case": case, "iters": ITERS[case]})["ms"]))
                    time.sleep(0.2)
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
        rss = {n: c.ask({"op": "rss"})["peak_rss_mb"] for n, c in contenders.items()}
        load_s = {n: c.load_s for n, c in contenders.items()}
    finally:
        for c in contenders.values():
            c.close()
    med = {n: {c: median(v) for c, v in by.items()} for n, by in ms.items()}
    result = {"machine": machine(), "command": "python -m benchmarks.m3 " + " ".join(argv or sys.argv[1:]),
              "rounds": args.rounds, "iters": ITERS, "cases": {c: list(s) for c, s in CASES.items()},
              "median_ms": med, "round_ms": ms, "peak_rss_mb": rss, "load_s": load_s,
              "colbert_json_bytes_per_token": colbert_json_bytes_per_token(paths["m3"],
                                                                           cases["b8x256"]),
              "ratios": {c: {
                  "all three / dense-only export": med["bundle int8, all three"][c]
                  / med["bundle int8, dense-only export"][c],
                  "FlagEmbedding all three / bundle all three": med["FlagEmbedding fp32, all three"][c]
                  / med["bundle int8, all three"][c]} for c in CASES},
              "gate": json.loads((paths["m3"] / "manifest.json").read_text())["parity"]["int8"]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "results.md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [f"# BGE-M3's three outputs ({m['isa_level']}, {m['cpu_model']}, 2 threads)", "",
             f"`{r['command']}`: medians of {r['rounds']} alternating rounds (each round's "
             "figure the median of its calls), from text to answer.", "",
             "| contender | " + " | ".join(f"{c} ms" for c in r["median_ms"][next(iter(r['median_ms']))])
             + " | peak RSS MB |", "|---|" + "---:|" * (len(CASES) + 1)]
    for name, by in r["median_ms"].items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.1f}" for v in by.values())
                     + f" | {r['peak_rss_mb'][name]:.0f} |")
    lines += ["", "| ratio | " + " | ".join(CASES) + " |", "|---|" + "---:|" * len(CASES)]
    for key in next(iter(r["ratios"].values())):
        lines.append(f"| {key} | " + " | ".join(f"{r['ratios'][c][key]:.2f}" for c in CASES) + " |")
    lines += ["", f"ColBERT answer as JSON: {r['colbert_json_bytes_per_token']:.0f} bytes per "
              "input token.", "", f"Gate (int8 file against PyTorch fp32): {json.dumps(r['gate'])}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]))
    else:
        main()
