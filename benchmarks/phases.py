"""The handler's cold start, phase by phase, as it logs it itself: the "bundle loaded" line's
`init_ms` (imports, S3, manifest, onnxruntime import, tokenizer, session, verification) and
the "first request" line. `xlmr bench` prints them beside its own process-start-to-answer."""
from __future__ import annotations

import json
from typing import Any


def handler_phases(stdout: str) -> dict[str, Any]:
    """{"phases": {name: ms}} from the handler's JSON log lines ({} when it logged none)."""
    phases: dict[str, float] = {}
    for line in stdout.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            phases.update(entry.get("init_ms") or {})
            if "first_request_ms" in entry:
                phases["first_request"] = entry["first_request_ms"]
    return {"phases": phases} if phases else {}
