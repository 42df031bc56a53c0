"""Shared fixtures: tiny random checkpoints per (task, architecture), exported once per test
session with export/ (fp32 + int8), and the transformers pipeline on the same checkpoint."""
from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HAS_TORCH = importlib.util.find_spec("torch") is not None and \
    importlib.util.find_spec("transformers") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="needs the [export] extra")
# modules that import the export side at the top: not even collected where it is absent
collect_ignore = [] if HAS_TORCH else ["test_export.py", "test_convert.py",
                                      "test_streamed_export.py"]
# bundles built once per run by `python -m tests.bundles DIR` (scripts/test.sh): the serving
# tests run on them where torch is absent
PREBUILT = Path(os.environ["XLMR_TEST_BUNDLES"]) if os.environ.get("XLMR_TEST_BUNDLES") else None
needs_bundles = pytest.mark.skipif(not HAS_TORCH and PREBUILT is None,
                                   reason="needs the [export] extra or XLMR_TEST_BUNDLES")

# Multilingual inputs: Latin, Arabic, CJK, emoji, empty-ish, long.
TEXTS = [
    "My name is Wolfgang and I live in Berlin.",
    "Paris est la capitale de la France.",
    "القاهرة هي عاصمة مصر",
    "東京は日本の首都です。",
    "I love it 😍🔥!!",
    " . ",
    "Groenlinks praat over Schiphol.",
    " ".join(["The committee in Geneva approved the new budget for 2026."] * 12),
]


@pytest.fixture(scope="session")
def model_factory(tmp_path_factory):
    """(task, arch) -> folder of a tiny random checkpoint, built once."""
    cache: dict[tuple, Path] = {}

    def make(task: str, arch: str = "xlm-roberta", **kw: Any) -> Path:
        key = (task, arch, tuple(sorted(kw.items())))
        if key not in cache:
            from tests.factory import make_model

            folder = tmp_path_factory.mktemp(f"{task}-{arch}".replace("_", "-"))
            cache[key] = make_model(folder, task, arch, initializer_range=0.2, **kw)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def bundle_factory(model_factory, tmp_path_factory):
    """(task, arch) -> exported bundle folder (fp32 + int8, accuracy gate off: random weights;
    fusions forced, so what the tests count does not depend on a timing). A bundle prebuilt
    under XLMR_TEST_BUNDLES is used as it is; without torch, only those exist."""
    from tests.bundles import build, key_name

    cache: dict[str, Path] = {}

    def make(task: str, arch: str = "xlm-roberta", precisions=("fp32", "int8"), **kw: Any) -> Path:
        name = key_name(task, arch, tuple(precisions), **kw)
        if name not in cache:
            if PREBUILT is not None and (PREBUILT / name / "manifest.json").is_file():
                cache[name] = PREBUILT / name
            elif not HAS_TORCH:
                pytest.skip(f"no prebuilt bundle {name} and no torch to build it")
            else:
                cache[name] = build(tmp_path_factory.mktemp("bundles") / name, task, arch,
                                    tuple(precisions), model_factory(task, arch, **kw))
        return cache[name]

    return make


def rewrite_manifest(folder: Path, data: dict) -> None:
    """Edit a bundle's manifest as someone with write access could: its digest rewritten too
    (what the runtime's other checks must then catch)."""
    import hashlib
    import json

    raw = json.dumps(data).encode()
    (folder / "manifest.json").write_bytes(raw)
    (folder / "manifest.json.sha256").write_text(hashlib.sha256(raw).hexdigest())


def hf_pipeline(task: str, folder: Path):
    import transformers

    return transformers.pipeline(task, model=str(folder), tokenizer=str(folder), device="cpu")


def assert_same(ours: Any, theirs: Any, atol: float = 1e-4, path: str = "$") -> None:
    """Same nesting, keys (in order), labels, ints and strings; floats within atol."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict), f"{path}: {type(ours).__name__} != dict"
        assert list(ours) == list(theirs), f"{path}: keys {list(ours)} != {list(theirs)}"
        for k in theirs:
            assert_same(ours[k], theirs[k], atol, f"{path}.{k}")
    elif isinstance(theirs, (list, tuple)):
        assert isinstance(ours, (list, tuple)), f"{path}: {type(ours).__name__} != list"
        assert len(ours) == len(theirs), f"{path}: len {len(ours)} != {len(theirs)}"
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, atol, f"{path}[{i}]")
    elif isinstance(theirs, (float, np.floating)):
        assert isinstance(ours, (float, np.floating)), f"{path}: {ours!r} is not a float"
        assert math.isclose(float(ours), float(theirs), abs_tol=atol), f"{path}: {ours} != {theirs}"
    else:
        assert ours == theirs, f"{path}: {ours!r} != {theirs!r}"
