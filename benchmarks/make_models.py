"""The models the recorded results use: xlm-roberta-base-shaped random checkpoints (fill-mask,
text-classification) with the real XLM-R tokenizer, and all-MiniLM-L6-v2's real weights mapped
to RoBERTa. Usage: python -m benchmarks.make_models benchmarks/models"""
from __future__ import annotations

import sys
from pathlib import Path


def make_base(folder: Path, task: str) -> Path:
    """xlm-roberta-base dimensions (768 x 12 layers, 250,002 pieces), random weights."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.factory import make_model

    return make_model(folder, task, "xlm-roberta", hidden=768, layers=12, num_attention_heads=12,
                      intermediate_size=3072)


def main(root: Path) -> None:
    from xlmr_serverless.export.convert import convert_bert_to_roberta, minilm_source

    root.mkdir(parents=True, exist_ok=True)
    for task in ("fill-mask", "text-classification"):
        if not (root / f"xlmr-base-{task}" / "config.json").exists():
            make_base(root / f"xlmr-base-{task}", task)
    if not (root / "minilm-roberta" / "config.json").exists():
        convert_bert_to_roberta(minilm_source(), root / "minilm-roberta")
    print(root)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/models"))
