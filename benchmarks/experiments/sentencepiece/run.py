"""Could the `sentencepiece` library (what transformers' slow XLM-R tokenizer runs) replace
`tokenizers` for a bundle's Unigram vocabulary? It writes a SentencePiece model from the
bundle's tokenizer.json (same pieces, scores, ids and normalizer), then measures, each library
in its own process, rounds alternating: load time and the RSS the loaded vocabulary holds; and
compares the ids and offsets of both on every input class where they might part.

    python -m benchmarks.experiments.sentencepiece.run TOKENIZER_JSON [--rounds 5] [--out DIR]
"""
from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
TYPES = {"<unk>": 2, "<s>": 3, "<pad>": 3, "</s>": 3, "<mask>": 4}  # UNKNOWN, CONTROL, USER_DEFINED


def write_model(tokenizer_json: Path, out: Path) -> Path:
    """A SentencePiece Unigram model with tokenizer.json's pieces in its order (ids equal), its
    scores, and its precompiled normalizer (nmt_nfkc's charsmap)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    t = json.loads(tokenizer_json.read_text())
    assert t["model"]["type"] == "Unigram", "a Unigram vocabulary only"
    m = pb.ModelProto()  # type: ignore[attr-defined]
    for piece, score in t["model"]["vocab"]:
        p = m.pieces.add()
        p.piece, p.score, p.type = piece, score, TYPES.get(piece, 1)
    specials = {a["content"]: a["id"] for a in t["added_tokens"]}
    m.trainer_spec.model_type = pb.TrainerSpec.UNIGRAM  # type: ignore[attr-defined]
    m.trainer_spec.vocab_size = len(m.pieces)
    m.trainer_spec.unk_id, m.trainer_spec.bos_id = specials["<unk>"], specials["<s>"]
    m.trainer_spec.eos_id, m.trainer_spec.pad_id = specials["</s>"], specials["<pad>"]
    norm = t["normalizer"]
    charsmap = next(n["precompiled_charsmap"] for n in norm.get("normalizers", [norm])
                    if n["type"] == "Precompiled")
    m.normalizer_spec.name = "nmt_nfkc"
    m.normalizer_spec.precompiled_charsmap = base64.b64decode(charsmap)
    m.normalizer_spec.add_dummy_prefix = True
    m.normalizer_spec.remove_extra_whitespaces = True
    m.normalizer_spec.escape_whitespaces = True
    out.write_bytes(m.SerializeToString())
    return out


# Each class: the inputs where the two libraries might part (normalisation, whitespace, specials).
CLASSES: dict[str, list[str]] = {
    "special tokens in text": ["a <mask> b", "<mask>", "x<mask>y", "<s> hi </s>", "<pad><unk>",
                               "Paris is the <mask> of France.", "<mask> <mask>"],
    "leading, trailing, repeated whitespace": ["  two leading", "trailing  ", "a  b", "a   b",
                                               "a \t b", "line\nbreak", "a\n\nb", "\u3000wide space",
                                               " ", "a\u00a0b", "tab\tend\t"],
    "NFKC-normalised characters": ["ﬁne ﬂow", "Ｆｕｌｌ ｗｉｄｔｈ", "①②③", "x²+y²", "㎞ ㎏",
                                   "\ufdfa", "Å (A+ring) vs Å", "ｶﾀｶﾅ", "™ ℃ ½"],
    "control and zero-width": ["zero\u200bwidth", "joiner\u200dx", "soft\u00adhyphen", "bell\x07",
                               "bom\ufeffx", "rtl\u202eabc"],
    "emoji and symbols": ["I ❤️ it 👍🏽", "🤗🤗🤗", "→ ← ↔", "≥ ≤ ≠"],
}


def corpus_lines() -> list[str]:
    """Mixed multilingual lines: the benchmark texts the project ships."""
    lines: list[str] = []
    for f in sorted((ROOT / "benchmarks" / "texts").glob("*.txt")):
        lines += [x for x in f.read_text().splitlines() if x.strip()]
    return lines


def char_offsets(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Byte offsets into text's UTF-8 -> character offsets."""
    starts = {}
    pos = 0
    for i, ch in enumerate(text):
        starts[pos] = i
        pos += len(ch.encode())
    starts[pos] = len(text)
    return [(starts.get(b, -1), starts.get(e, -1)) for b, e in spans]


def compare(tokenizer_json: Path, model: Path) -> dict[str, Any]:
    """Per input class: how many inputs give other ids, or other offsets, with examples."""
    import sentencepiece as spm
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    sp = spm.SentencePieceProcessor(model_file=str(model))
    bos, eos = sp.bos_id(), sp.eos_id()
    out: dict[str, Any] = {}
    for name, texts in {"mixed lines (benchmarks/texts)": corpus_lines(), **CLASSES}.items():
        ids_differ, offsets_differ = 0, 0
        examples: list[dict[str, Any]] = []
        for text in texts:
            a = tok.encode(text)
            proto = sp.encode(text, return_type="proto")
            ids = [bos, *[p.id for p in proto.pieces], eos]
            spans = [(0, 0), *char_offsets(text, [(p.begin, p.end) for p in proto.pieces]), (0, 0)]
            if ids != a.ids:
                ids_differ += 1
                if len(examples) < 3:
                    examples.append({"text": text, "tokenizers": a.tokens,
                                     "sentencepiece": ["<s>", *[p.piece for p in proto.pieces],
                                                       "</s>"]})
            elif [tuple(o) for o in a.offsets] != spans:
                offsets_differ += 1
                if len(examples) < 3:
                    examples.append({"text": text, "tokenizers": a.offsets, "sentencepiece": spans})
        out[name] = {"inputs": len(texts), "ids_differ": ids_differ,
                     "offsets_differ": offsets_differ, "examples": examples}
    return out


CHILD = """
import sys, time
def rss():
    s = open('/proc/self/status').read()
    return {k: int(s.split(k + ':')[1].split()[0]) / 1024 for k in ('VmRSS', 'VmHWM')}
lib, path = sys.argv[1], sys.argv[2]
if lib == 'tokenizers':
    from tokenizers import Tokenizer as T
    load = lambda: T.from_file(path)
else:
    import sentencepiece as spm
    load = lambda: spm.SentencePieceProcessor(model_file=path)
before = rss()
t0 = time.perf_counter(); obj = load(); dt = time.perf_counter() - t0
after = rss()
import json
print(json.dumps({'load_s': dt, 'rss_mb': after['VmRSS'] - before['VmRSS'],
                  'peak_mb': after['VmHWM'] - before['VmRSS'], 'process_rss_mb': after['VmRSS']}))
"""


def load_cost(lib: str, path: Path) -> dict[str, float]:
    """One load in a fresh process (its imports done before the clock starts)."""
    r = subprocess.run([sys.executable, "-c", CHILD, lib, str(path)], capture_output=True,
                       text=True, check=True, env={"TOKENIZERS_PARALLELISM": "false",
                                                   "PATH": "/usr/bin:/bin"})
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tokenizer_json", type=Path)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from xlmr_serverless.runtime.cpu import cpu_model, isa

    with tempfile.TemporaryDirectory() as tmp:
        model = write_model(a.tokenizer_json, Path(tmp) / "spm.model")
        size = {"tokenizer.json MB": a.tokenizer_json.stat().st_size / 1e6,
                "spm.model MB": model.stat().st_size / 1e6}
        rounds: dict[str, list[dict[str, float]]] = {"tokenizers": [], "sentencepiece": []}
        for _ in range(a.rounds):
            rounds["tokenizers"].append(load_cost("tokenizers", a.tokenizer_json))
            rounds["sentencepiece"].append(load_cost("sentencepiece", model))
        diff = compare(a.tokenizer_json, model)
    import statistics as st

    result = {"isa": isa(), "cpu": cpu_model(), "files": size, "rounds": rounds,
              "median": {lib: {k: st.median(r[k] for r in rs) for k in rs[0]}
                         for lib, rs in rounds.items()},
              "differences": diff, "unicode": unicodedata.unidata_version}
    text = json.dumps(result, indent=1, ensure_ascii=False)
    print(json.dumps(result["median"], indent=1), json.dumps(
        {k: {x: v[x] for x in ("inputs", "ids_differ", "offsets_differ")} for k, v in diff.items()},
        indent=1))
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "results.json").write_text(text)


if __name__ == "__main__":
    main()
