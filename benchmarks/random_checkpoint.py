"""Full-size random checkpoints (xlm-roberta-base, -large and XLM-RoBERTa-XL shapes) for the
size benchmarks, written tensor by tensor, chunk by chunk, into sharded safetensors: never the
whole model in memory (XL is 14 GB in fp32). Names and shapes come from the transformers class
built on the meta device, so the files load with from_pretrained like a hub checkpoint.

Usage: python -m benchmarks.random_checkpoint large fill-mask benchmarks/models/xlmr-large-fill-mask
       [--dtype bf16]"""
from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np

# The published configs' sizes (facebook/xlm-roberta-xl: pre-LayerNorm, vocabulary padded to
# 250,880 rows; the tokenizer is XLM-R's 250,002 pieces).
SHAPES: dict[str, dict[str, Any]] = {
    "base": {"arch": "xlm-roberta", "hidden_size": 768, "num_hidden_layers": 12,
             "num_attention_heads": 12, "intermediate_size": 3072, "vocab_size": 250002},
    "large": {"arch": "xlm-roberta", "hidden_size": 1024, "num_hidden_layers": 24,
              "num_attention_heads": 16, "intermediate_size": 4096, "vocab_size": 250002},
    "xl": {"arch": "xlm-roberta-xl", "hidden_size": 2560, "num_hidden_layers": 36,
           "num_attention_heads": 32, "intermediate_size": 10240, "vocab_size": 250880},
}
DTYPES = {"fp32": ("F32", 4), "bf16": ("BF16", 2), "fp16": ("F16", 2)}
SHARD_BYTES = 5 * 1000**3  # save_pretrained's default max_shard_size ("5GB")
CHUNK = 1 << 22  # elements generated at a time (16 MB of fp32)


def config_for(shape: dict[str, Any], task: str) -> Any:
    """The transformers config of `shape` for `task` (labels as the tests' tiny models have)."""
    import transformers

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.factory import LABELS, PREFIX

    kw = {k: v for k, v in shape.items() if k != "arch"}
    labels = LABELS.get(task)
    if labels:
        kw.update(id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    cfg_cls = getattr(transformers, f"{PREFIX[shape['arch']]}Config")
    return cfg_cls(max_position_embeddings=514, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                   type_vocab_size=1, layer_norm_eps=1e-5, **kw)


def parameter_shapes(config: Any, task: str) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of the task's transformers class, built on the meta device (no
    memory); tied parameters (the LM head's decoder) once, as save_pretrained writes them."""
    import torch
    import transformers

    from xlmr_serverless.runtime.tasks import task_spec

    cls = getattr(transformers, task_spec(task).auto_class)
    with torch.device("meta"):
        model = cls.from_config(config)
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def initial_value(name: str) -> float | None:
    """transformers' init: LayerNorm weights 1, biases 0; None: normal(0, 0.02)."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "bias":
        return 0.0
    if "norm" in name.lower() and leaf == "weight":
        return 1.0
    return None


def chunks(name: str, n: int, rng: np.random.Generator, chunk: int = CHUNK,
           std: float = 0.02) -> Iterator[np.ndarray]:
    """The tensor's values, flat, `chunk` elements at a time (fp32)."""
    value = initial_value(name)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        if value is None:
            out = rng.standard_normal(m, dtype=np.float32)
            out *= std
            yield out
        else:
            yield np.full(m, value, np.float32)


def encode(values: np.ndarray, dtype: str) -> bytes:
    """fp32 values as the file's dtype (bf16: the top 16 bits, rounded to nearest even)."""
    if dtype == "fp32":
        return values.tobytes()
    if dtype == "fp16":
        return values.astype(np.float16).tobytes()
    bits = values.view(np.uint32)
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> 16) & 1))
    return (rounded >> 16).astype(np.uint16).tobytes()


def plan_shards(shapes: dict[str, tuple[int, ...]], itemsize: int,
                shard_bytes: int) -> list[list[str]]:
    """Tensors in order, cut into shards of at most `shard_bytes` (a bigger tensor alone)."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = int(np.prod(shape)) * itemsize
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def write_shard(path: Path, names: list[str], shapes: dict[str, tuple[int, ...]], dtype: str,
                rng: np.random.Generator, chunk: int = CHUNK) -> int:
    """One safetensors file (8-byte header length, JSON header, raw little-endian data),
    generated as it is written; returns its data bytes."""
    tag, itemsize = DTYPES[dtype]
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in names:
        nbytes = int(np.prod(shapes[name])) * itemsize
        header[name] = {"dtype": tag, "shape": list(shapes[name]),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name in names:
            for values in chunks(name, int(np.prod(shapes[name])), rng, chunk):
                f.write(encode(values, dtype))
    return offset


def write_checkpoint(folder: Path, config: Any, task: str, dtype: str = "fp32", seed: int = 0,
                     shard_bytes: int = SHARD_BYTES, chunk: int = CHUNK) -> Path:
    """config.json + model(-0000i-of-0000n).safetensors (+ index when sharded), streamed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config.architectures = [_class_name(config, task)]
    config.dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[dtype]
    config.save_pretrained(str(folder))
    shapes = parameter_shapes(config, task)
    shards = plan_shards(shapes, DTYPES[dtype][1], shard_bytes)
    rng = np.random.default_rng(seed)
    if len(shards) == 1:
        write_shard(folder / "model.safetensors", shards[0], shapes, dtype, rng, chunk)
        return folder
    weight_map, total = {}, 0
    for i, names in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        total += write_shard(folder / file, names, shapes, dtype, rng, chunk)
        weight_map.update(dict.fromkeys(names, file))
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return folder


def _class_name(config: Any, task: str) -> str:
    """The architecture name from_pretrained and `--task auto` read (XLMRobertaForMaskedLM)."""
    from tests.factory import PREFIX
    from xlmr_serverless.runtime.tasks import task_spec

    return PREFIX[config.model_type] + (task_spec(task).head or "Model")


def make(folder: Path, size: str, task: str, dtype: str = "fp32") -> Path:
    """A `size`-shaped random checkpoint for `task` with the real XLM-R tokenizer files."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.factory import save_xlmr_tokenizer

    folder = write_checkpoint(Path(folder), config_for(SHAPES[size], task), task, dtype)
    save_xlmr_tokenizer(folder)
    return folder


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("size", choices=sorted(SHAPES))
    p.add_argument("task")
    p.add_argument("folder", type=Path)
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    a = p.parse_args(argv)
    import resource
    import time

    t0 = time.perf_counter()
    make(a.folder, a.size, a.task, a.dtype)
    size = sum(f.stat().st_size for f in a.folder.glob("*.safetensors"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{a.folder}: {size / 1e9:.2f} GB of {a.dtype} in {time.perf_counter() - t0:.0f} s, "
          f"peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
