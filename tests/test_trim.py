"""Vocabulary trimming (`xlmr export --trim-vocab`): on its corpus a trimmed bundle tokenizes
into the same pieces and answers what the untrimmed model answers (fp32, atol 1e-5); other
text still tokenizes; the manifest and /health say what was kept and the coverage."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import needs_torch

pytestmark = [needs_torch, pytest.mark.main_env_only]

CORPUS = ["Der Vertrag wurde gestern in Berlin unterzeichnet.",
          "Paris ist die Hauptstadt von Frankreich.",
          "La ville de Lyon est connue pour sa cuisine.",
          "Wir treffen uns morgen früh am Bahnhof."]


@pytest.fixture(scope="module")
def trimmed(model_factory, tmp_path_factory):
    from xlmr_serverless.export.build import ExportOptions, build_bundle

    folder = tmp_path_factory.mktemp("trim")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(CORPUS), encoding="utf-8")
    model = model_factory("fill-mask")
    build_bundle(model, "fill-mask", folder / "b", ExportOptions(
        precisions=("fp32", "int8"), min_agreement=0.0, optimize=True, trim_corpus=corpus),
        log=lambda s: None)
    return model, folder / "b"


def test_the_corpus_tokenizes_the_same_and_answers_the_same(trimmed):
    import onnxruntime as ort
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model, folder = trimmed
    full = AutoTokenizer.from_pretrained(str(model)).backend_tokenizer
    small = Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert small.get_vocab_size() < 1000 < 250_000 < full.get_vocab_size()
    masked = [t.replace("Berlin", "<mask>").replace("Paris", "<mask>").replace(
        "Lyon", "<mask>").replace("morgen", "<mask>") for t in CORPUS]
    for text in CORPUS + masked:  # the same pieces, one to one
        assert small.encode(text).tokens == full.encode(text).tokens, text
    # the untrimmed model's logits on the kept pieces are the trimmed graph's
    full_vocab, small_vocab = full.get_vocab(), small.get_vocab()
    kept = np.array([full_vocab[p] for p, _ in sorted(small_vocab.items(), key=lambda kv: kv[1])])
    ids = [small.encode(t).ids for t in masked]
    width = max(map(len, ids))
    batch = np.full((len(ids), width), small_vocab["<pad>"], np.int64)
    for i, row in enumerate(ids):
        batch[i, :len(row)] = row
    attention = (batch != small_vocab["<pad>"]).astype(np.int64)
    sess = ort.InferenceSession(str(folder / "model.fp32.onnx"))
    (ours,) = sess.run(None, {"input_ids": batch, "attention_mask": attention})
    lm = AutoModelForMaskedLM.from_pretrained(str(model)).eval()
    with torch.no_grad():
        logits = lm(input_ids=torch.from_numpy(kept[batch]),
                    attention_mask=torch.from_numpy(attention)).logits.numpy()
    theirs = logits[batch == small_vocab["<mask>"]][:, kept]
    assert ours.shape == theirs.shape == (len(masked), len(kept))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_other_text_still_tokenizes_and_the_bundle_says_what_it_kept(trimmed):
    from xlmr_serverless.runtime import load

    _, folder = trimmed
    m = json.loads((folder / "manifest.json").read_text())["vocabulary"]
    assert m["of"] == 250_002 and m["kept"] < 1000 and m["corpus_lines"] == len(CORPUS)
    assert 0 < m["held_out_coverage"] < 1  # the built-in multilingual sentences: partly
    pipe = load(folder)
    assert pipe.describe()["vocabulary"] == m  # /health shows it
    for text in ("東京は<mask>の首都です。", "Der <mask> wurde gestern unterzeichnet."):
        answer = pipe(text, top_k=3)
        assert len(answer) == 3 and all(a["token_str"] is not None for a in answer)


def test_a_byte_level_bpe_trims_exactly_on_its_corpus(model_factory, tmp_path):
    """RoBERTa's byte-level BPE: the kept merges rebuild the corpus's pieces one to one, the
    trimmed graph gives the untrimmed logits on them, and any other text still tokenizes into
    kept pieces that decode back to it (the byte alphabet stays)."""
    import onnxruntime as ort
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from xlmr_serverless.export.build import ExportOptions, build_bundle
    from xlmr_serverless.runtime import load

    model = model_factory("fill-mask", "roberta")
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(CORPUS), encoding="utf-8")
    out = tmp_path / "b"
    build_bundle(model, "fill-mask", out, ExportOptions(
        precisions=("fp32",), min_agreement=0.0, optimize=False, trim_corpus=corpus),
        log=lambda s: None)
    full = AutoTokenizer.from_pretrained(str(model)).backend_tokenizer
    small = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert 256 < small.get_vocab_size() < full.get_vocab_size()
    full_vocab = full.get_vocab()
    kept = np.array([full_vocab[p] for p, _ in
                     sorted(small.get_vocab().items(), key=lambda kv: kv[1])])
    texts = CORPUS + [t.replace("Berlin", "<mask>") for t in CORPUS[:1]]
    for text in texts:
        assert small.encode(text).tokens == full.encode(text).tokens, text
        assert list(kept[small.encode(text).ids]) == full.encode(text).ids
    ids = np.array([small.encode(texts[-1]).ids])
    sess = ort.InferenceSession(str(out / "model.fp32.onnx"))
    (ours,) = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
    lm = AutoModelForMaskedLM.from_pretrained(str(model)).eval()
    with torch.no_grad():
        theirs = lm(input_ids=torch.from_numpy(kept[ids])).logits.numpy()
    np.testing.assert_allclose(ours, theirs[ids == small.token_to_id("<mask>")][:, kept],
                               atol=1e-5)
    for other in ("東京は日本の首都です。", "Completely unrelated words, 42 of them!"):
        assert small.decode(small.encode(other).ids) == other
    assert len(load(out)("Quite <mask> text.", top_k=2)) == 2


def test_a_bpe_language_preset_keeps_what_text_in_its_scripts_uses(tmp_path):
    """Byte-level pieces are judged by what they spell (the tokenizer's decoder): a Latin
    preset keeps every piece, and every merge, that Latin text can use."""
    from tokenizers import Tokenizer

    from tests.factory import save_bpe_tokenizer
    from xlmr_serverless.export import trim

    save_bpe_tokenizer(tmp_path)
    data = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    full = Tokenizer.from_str(json.dumps(data))
    latin = trim.choose(data, [], scripts=frozenset({"LATIN"}))
    small = Tokenizer.from_str(json.dumps(trim.tokenizer(data, latin)))
    assert small.get_vocab_size() < full.get_vocab_size()
    for text in ("Wir treffen uns morgen früh am Bahnhof.", "Ça coûte très cher, señor."):
        assert small.encode(text).tokens == full.encode(text).tokens, text


def test_a_language_preset_keeps_its_scripts_exactly(model_factory, tmp_path):
    """--trim-languages de,fr keeps every Latin-script piece (no corpus): German and French
    text never seen tokenizes into the same pieces and gets the untrimmed logits; Cyrillic
    pieces are gone, yet Russian text still answers; an unknown code is refused first."""
    import onnxruntime as ort
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from xlmr_serverless.export import ExportError
    from xlmr_serverless.export.build import ExportOptions, build_bundle
    from xlmr_serverless.runtime import load

    model = model_factory("fill-mask")
    with pytest.raises(ExportError, match="unknown language.*xx"):
        build_bundle(model, "fill-mask", tmp_path / "x", ExportOptions(trim_languages=("xx",)),
                     log=lambda s: None)
    out = tmp_path / "b"
    build_bundle(model, "fill-mask", out, ExportOptions(
        precisions=("fp32",), min_agreement=0.0, optimize=True, trim_languages=("de", "fr")),
        log=lambda s: None)
    voc = json.loads((out / "manifest.json").read_text())["vocabulary"]
    assert voc["languages"] == ["de", "fr"] and voc["scripts"] == ["LATIN"]
    assert 50_000 < voc["kept"] < 200_000  # Latin is less than half of XLM-R's pieces
    full = AutoTokenizer.from_pretrained(str(model)).backend_tokenizer
    small = Tokenizer.from_file(str(out / "tokenizer.json"))
    texts = ["Die Ausstellung öffnet nächste Woche im <mask>.",
             "Nous avons réservé une <mask> près de la gare."]
    for text in texts:
        assert small.encode(text).tokens == full.encode(text).tokens, text
    full_vocab = full.get_vocab()
    kept = np.array([full_vocab[p] for p, _ in
                     sorted(small.get_vocab().items(), key=lambda kv: kv[1])])
    sess = ort.InferenceSession(str(out / "model.fp32.onnx"))
    lm = AutoModelForMaskedLM.from_pretrained(str(model)).eval()
    for text in texts:
        ids = np.array([small.encode(text).ids])
        (ours,) = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        with torch.no_grad():
            theirs = lm(input_ids=torch.from_numpy(kept[ids])).logits.numpy()
        np.testing.assert_allclose(ours, theirs[ids == small.token_to_id("<mask>")][:, kept],
                                   atol=1e-5)
    assert len(load(out)("Москва — <mask> России.", top_k=2)) == 2
