"""What an export can be refused for before torch loads (seconds on a cold disk): unknown
precisions, an unknown task, a local model folder that is not there. The CLI runs it first."""
from __future__ import annotations

from pathlib import Path

from ..runtime import precisions as registry
from ..runtime import tasks
from .errors import ExportError

# the precisions whose files hold the word-embedding table quantized (export/table4.py)
TABLE_BITS_PRECISIONS = frozenset({"int8", "int4"})


def preflight(model: str | Path, task: str, precisions: tuple[str, ...],
              languages: tuple[str, ...] = (), table_bits: int = 8) -> None:
    """Raise the ExportError the full export would raise for these arguments, cheaply."""
    if languages:
        from .languages import scripts_for

        scripts_for(languages)
    bad = [p for p in precisions if p not in registry.REGISTRY]
    if bad or not precisions:
        raise ExportError(f"unknown precision {bad}; choose from {', '.join(registry.NAMES)}")
    if table_bits not in (8, 4):
        raise ExportError(f"--table-bits {table_bits}: the table is stored in 8 or 4 bits")
    if table_bits == 4 and not TABLE_BITS_PRECISIONS & set(precisions):
        raise ExportError("--table-bits 4 applies to the int8 and int4 files: export "
                          "--precision int8 or int4")
    if task != "auto" and task not in tasks.names():
        raise ExportError(f"unknown task {task!r}; tasks: auto, {', '.join(tasks.names())}")
    looks_local = isinstance(model, Path) or str(model).startswith((".", "/", "~"))
    if looks_local and not Path(model).expanduser().exists():
        raise ExportError(f"model folder not found: {model}")
