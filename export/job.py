"""What a precision's writer is given and returns, and how its file is judged against fp32:
shared by the writers (export/writers.py) and the accuracy gate (export/gate.py)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from ..runtime.tasks.spec import TaskSpec
from . import validate
from .validate import Comparison


@dataclasses.dataclass
class WriteJob:
    """What a writer needs: the fp32 graph, where to write, and how to judge the result."""

    fp32: Path
    dst: Path
    external: bool  # weights in <dst>.data
    spec: TaskSpec
    config: Any  # the checkpoint's transformers config (sizes for the int8 recipes)
    feeds: list[dict[str, Any]]  # validation batches
    min_agreement: float
    log: Callable[[str], None]
    table_bits: int = 8  # the word-embedding table's bits in int8/int4 files (export/table4.py)
    calibration: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # never judged
    calibration_note: str = ""  # where the calibration text came from (export/calibration.py)
    search_off: str = ""  # why the int8 gate may not keep and time candidates (too large)

    @property
    def search(self) -> bool:
        return not self.search_off


@dataclasses.dataclass
class WriteResult:
    recipe: str | None = None
    parity: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra manifest figures


Writer = Callable[[WriteJob], WriteResult]


def judge(reference: Callable[[dict[str, Any]], list[Any]], path: Path,
          feeds: list[dict[str, Any]], spec: TaskSpec) -> Comparison:
    """A file's outputs on the validation feeds against `reference`'s, by the spec's measure."""
    sess = validate.onnx_session(path)
    acc = validate.Comparison()
    for feed in feeds:
        validate.compare(reference(feed), validate.run_onnx(sess, feed), feed, spec, acc)
    return acc
