"""`xlmr` as a user meets it: export and predict work; bad input is one line on stderr and
exit status 2, never a stack trace."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, needs_torch


def xlmr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xlmr_serverless.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)


def one_line_error(res: subprocess.CompletedProcess, text: str) -> None:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("xlmr: error: ") and text in last, last


@needs_torch
def test_export_then_predict(model_factory, tmp_path):
    out = tmp_path / "bundle"
    # RoBERTa's small BPE keeps this quick; the XLM-R exports are covered in test_export.py
    model = model_factory("fill-mask", "roberta")
    res = xlmr("export", "--model", str(model), "--task", "fill-mask", "--output", str(out),
               "--precision", "fp32,int8", "--min-agreement", "0", "--force-optimize")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "model.int8.onnx" in res.stderr and "[1/7] load" in res.stderr  # progress + summary
    res = xlmr("predict", str(out), "Paris is the <mask> of France.", "--param", "top_k=2",
               "--precision", "fp32")
    assert res.returncode == 0, res.stderr
    answer = json.loads(res.stdout)
    assert len(answer) == 2 and set(answer[0]) == {"score", "token", "token_str", "sequence"}
    bound = xlmr("predict", str(out), "Paris is the <mask> of France.", "--param", "top_k=2",
                 "--precision", "fp32", "--io-binding", "on")
    assert bound.returncode == 0 and json.loads(bound.stdout) == answer, bound.stderr
    one_line_error(xlmr("predict", str(out), "no mask"), "No mask_token")
    one_line_error(xlmr("predict", str(out), "a <mask>", "--param", "bogus=1"), "bogus")
    one_line_error(xlmr("predict", str(out), "a <mask>", "--param", "oops"), "key=value")
    res = xlmr("invoke", "--bundle", str(out), "--event", str(ROOT / "events/http-predict-fill-mask.json"))
    assert res.returncode == 0 and '"statusCode": 200' in res.stdout, res.stderr[-2000:]


@needs_torch
@pytest.mark.parametrize("args,text", [
    (["--model", "/nonexistent/model", "--task", "fill-mask"], "model folder not found"),
    (["--task", "summarize"], "unknown task 'summarize'"),
    (["--task", "fill-mask", "--precision", "int3"], "unknown precision"),
    (["--task", "fill-mask", "--precision", "fp32", "--table-bits", "4"], "applies to the int8 and int4"),
])
def test_export_errors(model_factory, tmp_path, args, text):
    base = ["export", "--output", str(tmp_path / "o")]
    if "--model" not in args:
        base += ["--model", str(model_factory("fill-mask"))]
    one_line_error(xlmr(*base, *args), text)


@pytest.mark.serving
def test_predict_missing_bundle(tmp_path):
    one_line_error(xlmr("predict", str(tmp_path / "none"), "x"), "bundle folder not found")


@pytest.mark.serving
def test_errors_and_version_load_no_torch(tmp_path):
    """Reporting a bad call must not import the export side (torch would take seconds)."""
    from xlmr_serverless import __version__

    res = xlmr("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"xlmr-serverless {__version__}"
    for call in (["predict", str(tmp_path / "none"), "x"],
                 ["export", "--model", str(tmp_path), "--task", "summarize", "--output",
                  str(tmp_path / "o")]):
        code = ("import sys\nfrom xlmr_serverless.cli import main\n"
                f"rc = main({call!r})\n"
                "heavy = sorted(m for m in ('torch', 'transformers', 'onnx', 'onnxruntime')"
                " if m in sys.modules)\nprint(rc, heavy)")
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=ROOT)
        assert res.stdout.split("\n")[0] == "2 []", res.stdout + res.stderr


@pytest.mark.serving
def test_the_cli_sends_no_onnxruntime_telemetry(bundle_factory, tmp_path):
    """onnxruntime's Linux telemetry (1.29+) writes a device id and an event store under the
    cache folder at its first session: `xlmr predict` builds one outside the handler and
    writes none of it (runtime/session.py's TELEMETRY_OFF, set by the CLI)."""
    import os

    bundle = bundle_factory("feature-extraction")
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    res = subprocess.run([sys.executable, "-m", "xlmr_serverless.cli", "predict", str(bundle),
                          "hello"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**env, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)  # it answered
    assert not list(tmp_path.rglob("*onnxruntime*")), list(tmp_path.rglob("*"))
