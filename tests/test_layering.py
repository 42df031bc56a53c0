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
    # fastjsonschema: the task specs' parameter schemas, compiled (runtime/parameters.py)
    assert set(imports(ROOT / "runtime")) <= {"numpy", "onnxruntime", "tokenizers",
                                              "fastjsonschema"}


def test_lambda_imports_only_what_its_image_installs():
    wanted = {line.split("==")[0].strip().replace("-", "_") for line in
              (ROOT / "lambda" / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    allowed = wanted | {"boto3"}
    used = imports(ROOT / "lambda")
    # the GPU image's WSGI server is imported by waitress, not by us; nothing else may be missing
    assert set(used) - allowed == set(), {k: used[k] for k in set(used) - allowed}
    assert not {"torch", "transformers", "export", "runtime"} & set(used)


def relative_imports(folder: Path) -> set[str]:
    """Sibling subpackages of xlmr_serverless a folder reaches with `from ..x import`."""
    found = set()
    for path in folder.rglob("*.py"):
        depth = len(path.relative_to(folder).parts)  # 1: the package's own top level
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == depth + 1 and node.module:
                found.add(node.module.split(".")[0])
    return found


PACKAGES = {"runtime": "runtime", "export": "export", "aws_lambda": "lambda"}


def module_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports when it runs (at its top or inside a function;
    not under TYPE_CHECKING or `__main__`, nor its own parent packages, which Python imports
    first whatever the order)."""
    files = {}
    for pkg, folder in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts
                     if p != "__init__"]
            files[".".join([pkg, *parts])] = path
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and any(w in ast.unparse(node.test) for w in ("TYPE_CHECKING", "__main__"))
                   for n in ast.walk(node)}
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        graph[name] = set()
        for node in ast.walk(tree):
            if id(node) in skipped or not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
            for target in (base, *(f"{base}.{a.name}" for a in node.names)):
                if target in files and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def test_no_import_circles():
    """No module reaches itself through the modules it imports: each side of a dependency
    holds what the other needs, instead of a lazy import hiding a circle."""
    graph = module_graph()

    def reaches(start: str) -> set[str]:
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(graph[m])
        return seen

    circles = sorted(m for m in graph if m in reaches(m))
    assert len(graph) > 60 and not circles, circles


def test_layers_point_down():
    """runtime/ imports no sibling; lambda/ and export/ only runtime/; nothing imports
    benchmarks/ (it is not installed)."""
    assert relative_imports(ROOT / "runtime") == set()
    assert relative_imports(ROOT / "lambda") <= {"runtime"}
    assert relative_imports(ROOT / "export") <= {"runtime"}
    for folder in ("runtime", "lambda", "export"):  # (the CLI's `bench` loads it from a checkout)
        assert "benchmarks" not in imports(ROOT / folder), folder


def installed_tree(root: Path) -> Path:
    """The installed layout (xlmr_serverless/{runtime,export,aws_lambda}) as links to the
    folders, so mypy checks every package under the names users import."""
    pkg = root / "xlmr_serverless"
    pkg.mkdir(parents=True)
    for f in (ROOT / "xlmr_serverless").iterdir():
        if f.suffix in (".py", ".typed"):
            (pkg / f.name).symlink_to(f)
    for name, folder in (("runtime", "runtime"), ("export", "export"), ("aws_lambda", "lambda")):
        (pkg / name).symlink_to(ROOT / folder, target_is_directory=True)
    (root / "benchmarks").symlink_to(ROOT / "benchmarks", target_is_directory=True)
    return root


def test_every_package_type_checks(tmp_path):
    """mypy over runtime/, export/, lambda/, the CLI and benchmarks/ (settings in pyproject)."""
    import importlib.util
    import subprocess

    import pytest

    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy not installed")
    res = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                          "--cache-dir", str(tmp_path / "cache"), "-p", "xlmr_serverless",
                          "-p", "benchmarks"], capture_output=True, text=True,
                         cwd=installed_tree(tmp_path / "tree"))
    assert res.returncode == 0, res.stdout[-3000:]
    checked = int(res.stdout.rsplit(" in ", 1)[1].split()[0])  # "... no issues found in N source files"
    ours = sum(len(list((ROOT / d).rglob("*.py")))
               for d in ("runtime", "export", "lambda", "xlmr_serverless", "benchmarks"))
    assert checked >= ours, res.stdout  # every module was found, none silently skipped


def test_ruff_clean():
    """ruff (rules in pyproject) over every folder of code."""
    import importlib.util
    import subprocess

    import pytest

    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff not installed")
    res = subprocess.run([sys.executable, "-m", "ruff", "check", "runtime", "export", "lambda",
                          "xlmr_serverless", "benchmarks", "tests", "events"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:]
