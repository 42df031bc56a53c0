"""The bundle's tokenizer.json: saved by the installed transformers from the source model's
own tokenizer, so the runtime tokenizes exactly as that tokenizer does (specials included)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from .errors import ExportError


def save_tokenizer(model: str | Path, dst: Path) -> dict[str, Any]:
    """Write dst/tokenizer.json; return the settings the runtime must honour
    (clean_up_tokenization_spaces, model_max_length, special tokens)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(model))
    except Exception as exc:  # transformers raises many types here
        raise ExportError(f"cannot load the tokenizer of {model}: {exc}") from exc
    if not getattr(tok, "is_fast", False):
        raise ExportError(f"{model} has no fast (tokenizers) tokenizer to bundle")
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        data = json.loads((Path(tmp) / "tokenizer.json").read_text(encoding="utf-8"))
    data["truncation"], data["padding"] = None, None  # the runtime sets both per call
    Path(dst).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    specials = {
        name: {"token": getattr(tok, f"{name}_token"), "id": getattr(tok, f"{name}_token_id")}
        for name in ("bos", "eos", "cls", "sep", "pad", "unk", "mask")
        if getattr(tok, f"{name}_token", None) is not None
    }
    max_len = tok.model_max_length if tok.model_max_length < 1_000_000 else None
    return {
        "clean_up_tokenization_spaces": bool(getattr(tok, "clean_up_tokenization_spaces", False)),
        "model_max_length": max_len,
        "special_tokens": specials,
    }
