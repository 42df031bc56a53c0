"""The small bundles the serving tests run on, built once per test run by the export side
(`python -m tests.bundles DIR`) so that the serving tier can run where torch is absent
(scripts/test.sh points XLMR_TEST_BUNDLES at DIR for every environment)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

PRECISIONS = ("fp32", "int8")


def key_name(task: str, arch: str = "xlm-roberta", precisions: tuple[str, ...] = PRECISIONS,
             **kw: Any) -> str:
    """The folder name of one bundle_factory key."""
    extra = "".join(f"-{k}={v}" for k, v in sorted(kw.items()))
    return f"{task}-{arch}-{'+'.join(precisions)}{extra}"


# BGE-M3's structure: an embedding checkpoint with its sparse and ColBERT layers
M3 = {"heads": "sparse+colbert"}


def with_heads(heads: tuple[str, ...]) -> dict[str, Any]:
    """bundle_factory's arguments for a bundle that has `heads` (a route's)."""
    return dict(M3) if heads else {}


def serving_keys() -> list[tuple[str, str, tuple[str, ...], dict[str, Any]]]:
    """What the serving tests ask bundle_factory for: every task, the CUDA-file case and an
    embedding model with BGE-M3's heads."""
    from xlmr_serverless.runtime.tasks import names

    return [(t, "xlm-roberta", PRECISIONS, {}) for t in names()] + \
        [("text-classification", "xlm-roberta", ("fp32", "int8", "fp16"), {}),
         ("feature-extraction", "xlm-roberta", PRECISIONS, M3)]


def build(out: Path, task: str, arch: str, precisions: tuple[str, ...], model: Path,
          **kw: Any) -> Path:
    """Export as the tests do: accuracy gate off (random weights), fusions forced (what the
    tests count does not depend on a timing)."""
    from xlmr_serverless.export.build import ExportOptions, build_bundle

    build_bundle(model, task, out, ExportOptions(precisions=precisions, min_agreement=0.0,
                                                 optimize=True),
                 log=logging.getLogger("test.export").info)
    return out


def _build_model_bundles(root: Path, task: str, arch: str, kw: dict[str, Any],
                         keys: list[tuple[str, ...]]) -> None:
    """One model's bundles (one checkpoint, built here once, for each precision set)."""
    from tests.factory import make_model

    missing = [p for p in keys
               if not (root / key_name(task, arch, p, **kw) / "manifest.json").is_file()]
    if missing:
        model = make_model(root / ".models" / key_name(task, arch, **kw), task, arch,
                           initializer_range=0.2, **kw)
        for precisions in missing:
            build(root / key_name(task, arch, precisions, **kw), task, arch, precisions, model)


def main(root: Path, workers: int = 2) -> None:
    """Every serving bundle, built by `workers` processes side by side, one model each (an
    export of a tiny model is mostly single-threaded Python: two take little longer than
    one; a model's checkpoint is written by one process only)."""
    from concurrent.futures import ProcessPoolExecutor

    root.mkdir(parents=True, exist_ok=True)
    by_model: dict[tuple[str, str, str], list[tuple[str, ...]]] = {}
    kws: dict[tuple[str, str, str], dict[str, Any]] = {}
    for task, arch, precisions, kw in serving_keys():
        key = (task, arch, key_name(task, arch, **kw))
        by_model.setdefault(key, []).append(precisions)
        kws[key] = kw
    with ProcessPoolExecutor(workers) as pool:
        for done in [pool.submit(_build_model_bundles, root, key[0], key[1], kws[key], keys)
                     for key, keys in by_model.items()]:
            done.result()
    print(root)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
