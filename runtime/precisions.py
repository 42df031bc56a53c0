"""The precision registry: what each precision is, which provider it is for and how the
runtime ranks it when choosing a bundle's file. Adding a precision is one line here plus its
writer, registered in export/writers.py's WRITERS."""
from __future__ import annotations

import dataclasses

from .errors import BundleError


@dataclasses.dataclass(frozen=True)
class Precision:
    """One precision a bundle file can hold."""

    name: str
    provider: str  # the execution provider it is meant for ("cpu" or "cuda")
    cpu_rank: int  # lower is preferred when the runtime picks a file for CPU
    cuda_rank: int  # ... and for CUDA
    summary: str


# int8 kernels are CPU-only in onnxruntime, fp16 is the CUDA file; int4 (MatMulNBits) runs on both
REGISTRY: dict[str, Precision] = {p.name: p for p in (
    Precision("int8", "cpu", 0, 3, "dynamic int8, accuracy-gated"),
    Precision("fp32", "cpu", 1, 1, "the exported graph, fused"),
    Precision("int4", "cpu", 2, 2, "weight-only 4-bit MatMulNBits, embedding int8, accuracy-gated"),
    Precision("fp16", "cuda", 3, 0, "fp16 weights and compute (CUDA)"),
)}

NAMES = tuple(REGISTRY)


def get(name: str) -> Precision:
    """The registry entry, or a BundleError naming the known precisions."""
    if name not in REGISTRY:
        raise BundleError(f"unknown precision {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def preferred(held: tuple[str, ...], provider: str) -> str:
    """The best of the `held` precisions for `provider` ('cpu' or 'cuda')."""
    known = [REGISTRY[p] for p in held if p in REGISTRY]
    if not known:
        raise BundleError(f"bundle holds no known precision (it holds: {', '.join(held)})")
    best = min(known, key=lambda p: p.cuda_rank if provider == "cuda" else p.cpu_rank)
    return best.name
