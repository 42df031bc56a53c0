"""The folder layout is the architecture: runtime/ imports neither export/ nor lambda/ nor
anything heavy; lambda/ imports only what lambda/requirements.txt installs (plus boto3, which
the Lambda base image carries)."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

from tests.conftest import ROOT

STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def imports(folder: Path) -> dict[str, set[str]]:
    """top-level module -> files importing it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(path.name)
    return {k: v for k, v in found.items() if k not in STDLIB}


def test_runtime_imports_only_the_serving_stack():
    assert set(imports(ROOT / "runtime")) <= {"numpy", "onnxruntime", "tokenizers"}


def test_lambda_imports_only_what_its_image_installs():
    wanted = {line.split("==")[0].strip().replace("-", "_") for line in
              (ROOT / "lambda" / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    allowed = wanted | {"runtime", "boto3", "xlmr_serverless.aws_lambda"}
    used = imports(ROOT / "lambda")
    # the GPU image's WSGI server is imported by waitress, not by us; nothing else may be missing
    assert set(used) - allowed == set(), {k: used[k] for k in set(used) - allowed}
    assert not {"torch", "transformers", "export"} & set(used)


def test_serving_side_type_checks():
    """runtime/ and lambda/ carry full annotations; mypy holds them to it."""
    import importlib.util
    import subprocess

    import pytest

    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy not installed")
    res = subprocess.run([sys.executable, "-m", "mypy", "runtime", "lambda",
                          "--ignore-missing-imports", "--follow-imports=silent"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:]
