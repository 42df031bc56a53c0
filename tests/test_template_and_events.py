"""template.yaml passes cfn-lint and `sam validate --lint`; it wires every route; the sample
events in events/ run through `xlmr invoke` as `sam local invoke -e` would run them."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, needs_torch

SAM = shutil.which("sam") or str(ROOT / ".venv-sam/bin/sam")


def test_cfn_lint():
    res = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), str(ROOT / "template.yaml")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.skipif(not os.path.exists(SAM), reason="aws-sam-cli not installed (scripts/setup.sh sam)")
def test_sam_validate_lint():
    res = subprocess.run([SAM, "validate", "--lint", "-t", str(ROOT / "template.yaml"),
                          "--region", "us-east-1"], capture_output=True, text=True,
                         env={**os.environ, "SAM_CLI_TELEMETRY": "0"}, timeout=300)
    assert res.returncode == 0 and "is a valid SAM Template" in res.stdout + res.stderr, \
        res.stdout + res.stderr


def test_template_routes_match_the_handler():
    import yaml  # pyyaml comes with cfn-lint

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    t = yaml.load((ROOT / "template.yaml").read_text(), Loader=Loader)
    fn = t["Resources"]["InferenceFunction"]["Properties"]
    routes = {(e["Properties"]["Method"], e["Properties"]["Path"]) for e in fn["Events"].values()}
    assert routes == {("POST", "/predict"), ("GET", "/health"), ("POST", "/embed"),
                      ("POST", "/rerank"), ("POST", "/v1/embeddings")}
    assert fn["PackageType"] == "Image"
    assert t["Resources"]["InferenceFunction"]["Metadata"]["Dockerfile"] == "lambda/Dockerfile"
    assert {"MemorySize", "Architecture", "Timeout", "ModelBucket", "AuthType"} <= set(t["Parameters"])


EVENT_TASKS = {"predict": "fill-mask", "predict-classify": "text-classification",
               "predict-qa": "question-answering", "rerank": "text-classification",
               "embed": "feature-extraction", "openai-embeddings": "feature-extraction",
               "health": "feature-extraction"}


@needs_torch
@pytest.mark.parametrize("kind", ["http", "rest"])
@pytest.mark.parametrize("name", sorted(EVENT_TASKS))
def test_sample_events_through_xlmr_invoke(bundle_factory, kind, name, capsys):
    """`xlmr invoke` in-process (the handler is built once per bundle, like a warm container);
    tests/test_cli.py runs the command itself in a subprocess."""
    import xlmr_cli

    event = ROOT / "events" / f"{kind}-{name}.json"
    rc = xlmr_cli.main(["invoke", "--bundle", str(bundle_factory(EVENT_TASKS[name])),
                        "--event", str(event)])
    out = capsys.readouterr().out
    assert rc == 0
    response = json.loads(out[out.index("{\n"):])
    assert response["statusCode"] == 200, response
    assert json.loads(response["body"])
