"""Smoke test of the benchmark harness on a tiny model and one size: the report has its
structure and every figure is a finite number. No timing assertions."""
from __future__ import annotations

import argparse
import importlib.util
import json
import math

import pytest

from tests.conftest import needs_torch


def finite_numbers(obj, path="$"):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from finite_numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from finite_numbers(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def test_missing_contender_is_reported(monkeypatch, tmp_path):
    """Without optimum-onnx the harness names what is missing instead of dropping it."""
    import builtins

    from benchmarks.harness import export_optimum

    real = builtins.__import__

    def no_optimum(name, *args, **kwargs):
        if name.startswith("optimum"):
            raise ImportError(name=name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_optimum)
    folder, why = export_optimum("m", "fill-mask", tmp_path, [])
    assert folder is None and "optimum-onnx not installed" in why


@needs_torch
@pytest.mark.skipif(importlib.util.find_spec("optimum") is None,
                    reason="runs in the 4.57 environment, where optimum-onnx is installed")
def test_bench_smoke(model_factory, tmp_path):
    from benchmarks.harness import run
    from benchmarks.report import summary

    # RoBERTa's small vocabulary keeps the smoke run short; the harness is the same for XLM-R
    args = argparse.Namespace(model=str(model_factory("fill-mask", "roberta")), task="fill-mask",
                              batch_sizes="1", seq_lens="16", providers="cpu", rounds=2,
                              output=str(tmp_path / "out"), threads=1)
    result = run(args)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["task"] == "fill-mask" and [c["name"] for c in saved["cases"]] == ["b1_s16"]
    names = set(saved["contenders"])
    assert {"pytorch_fp32", "bundle_fp32", "bundle_int8"} <= names
    assert {"optimum_fp32"} < names and any(n.startswith("optimum_int8_") for n in names)
    for name, c in saved["contenders"].items():
        assert c["latency_ms"]["b1_s16"]["n"] >= 2
        assert c["file_mb"] > 0 and c["peak_rss_mb"] > 0
        assert set(c["accuracy_vs_pytorch_fp32"]) >= {"max_abs_diff", "top1_agreement"}, name
        assert c["peak_rss_mb"] < 3000
    assert saved["contenders"]["bundle_fp32"]["accuracy_vs_pytorch_fp32"]["max_abs_diff"] < 1e-3
    assert {"runtime", "lambda_handler", "lambda_handler_1vcpu", "transformers_pipeline"} == \
        set(saved["cold_start"])
    assert {"imports", "tokenizer", "session", "load", "first_request"} <= \
        set(saved["cold_start"]["lambda_handler"]["phases"])  # the handler's own figures
    assert any(f["recipe"] for f in saved["bundle_export"]["files"])  # what export decided
    assert all("seconds" in v for v in saved["cold_start"].values()), saved["cold_start"]
    bad = [(p, v) for p, v in finite_numbers(saved) if not math.isfinite(v)]
    assert not bad, bad
    assert "b1_s16" in (tmp_path / "out" / "results.md").read_text()
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "out" / "chart.png").stat().st_size > 1000
    assert "int8 bundle" in summary(result)
    # every figure names its ISA, and a folder keeps one machine's figures
    from xlmr_serverless.runtime.cpu import isa

    assert saved["machine"]["isa_level"] == isa() and summary(result).startswith(f"[{isa()}]")
    assert f"ISA {isa()}" in (tmp_path / "out" / "results.md").read_text()


def test_results_of_another_isa_are_never_overwritten(tmp_path):
    from benchmarks.harness import check_same_machine, machine_folder
    from xlmr_serverless.runtime.cpu import isa

    (tmp_path / "results.json").write_text(json.dumps({"machine": {"isa_level": isa()}}))
    check_same_machine(tmp_path)  # the same ISA: fine
    (tmp_path / "results.json").write_text(json.dumps({"machine": {"isa_level": "not-" + isa()}}))
    with pytest.raises(SystemExit, match=f"recorded on not-{isa()}.*{machine_folder()}"):
        check_same_machine(tmp_path)
    assert machine_folder().startswith(isa())


@needs_torch
def test_io_binding_bench_prints_both_paths(bundle_factory, capsys):
    from benchmarks.experiments.io_binding.run import main

    main([str(bundle_factory("fill-mask", "roberta")), "--provider", "cpu", "--precision", "fp32",
          "--shapes", "1x8,2x16", "--rounds", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert "provider cpu, precision fp32" in lines[0]
    rows = {ln.split()[0]: [float(x) for x in ln.split()[1:]] for ln in lines[2:]}
    assert set(rows) == {"1x8", "2x16"}
    assert all(len(v) == 3 and all(math.isfinite(x) and x > 0 for x in v) for v in rows.values())
