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


def serving_keys() -> list[tuple[str, str, tuple[str, ...]]]:
    """What the serving tests ask bundle_factory for: every task, and the CUDA-file case."""
    from xlmr_serverless.runtime.tasks import names

    return [(t, "xlm-roberta", PRECISIONS) for t in names()] + \
        [("text-classification", "xlm-roberta", ("fp32", "int8", "fp16"))]


def build(out: Path, task: str, arch: str, precisions: tuple[str, ...], model: Path,
          **kw: Any) -> Path:
    """Export as the tests do: accuracy gate off (random weights), fusions forced (what the
    tests count does not depend on a timing)."""
    from xlmr_serverless.export.build import ExportOptions, build_bundle

    build_bundle(model, task, out, ExportOptions(precisions=precisions, min_agreement=0.0,
                                                 optimize=True),
                 log=logging.getLogger("test.export").info)
    return out


def _build_model_bundles(root: Path, task: str, arch: str,
                         keys: list[tuple[str, ...]]) -> None:
    """One model's bundles (one checkpoint, built here once, for each precision set)."""
    from tests.factory import make_model

    missing = [p for p in keys if not (root / key_name(task, arch, p) / "manifest.json").is_file()]
    if missing:
        model = make_model(root / ".models" / f"{task}-{arch}", task, arch, initializer_range=0.2)
        for precisions in missing:
            build(root / key_name(task, arch, precisions), task, arch, precisions, model)


def main(root: Path, workers: int = 2) -> None:
    """Every serving bundle, built by `workers` processes side by side, one model each (an
    export of a tiny model is mostly single-threaded Python: two take little longer than
    one; a model's checkpoint is written by one process only)."""
    from concurrent.futures import ProcessPoolExecutor

    root.mkdir(parents=True, exist_ok=True)
    by_model: dict[tuple[str, str], list[tuple[str, ...]]] = {}
    for task, arch, precisions in serving_keys():
        by_model.setdefault((task, arch), []).append(precisions)
    with ProcessPoolExecutor(workers) as pool:
        for done in [pool.submit(_build_model_bundles, root, task, arch, keys)
                     for (task, arch), keys in by_model.items()]:
            done.result()
    print(root)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
