"""Provider and thread selection, tested with faked provider lists and cgroup files (the CUDA
path itself runs only where a GPU is: see test_cuda_when_available)."""
from __future__ import annotations

import logging

import pytest

from runtime.errors import ProviderError
from runtime.session import CPU, CUDA, choose_provider, usable_cpus
from tests.conftest import needs_torch


def test_choose_provider():
    assert choose_provider("auto", [CUDA, CPU]) == "cuda"
    assert choose_provider("auto", [CPU]) == "cpu"
    assert choose_provider("cpu", [CUDA, CPU]) == "cpu"
    assert choose_provider("cuda", [CUDA, CPU]) == "cuda"
    with pytest.raises(ProviderError, match="no CUDA provider .*onnxruntime-gpu"):
        choose_provider("cuda", [CPU])
    with pytest.raises(ProviderError, match="provider must be one of auto, cpu, cuda"):
        choose_provider("tpu", [CPU])


def test_usable_cpus_reads_cgroup_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
    assert usable_cpus(tmp_path) == min(2, usable_cpus(tmp_path / "none"))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == usable_cpus(tmp_path / "none")
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert usable_cpus(tmp_path) == 1


class FakeSession:
    def __init__(self, path, opts, providers):
        self.providers, self.threads = providers, opts.intra_op_num_threads

    def get_providers(self):
        return [CPU]  # CUDA was asked for but could not start: onnxruntime falls back silently

    def get_inputs(self):
        return []


@needs_torch
def test_auto_falls_back_to_cpu_and_says_so(bundle_factory, monkeypatch, caplog):
    import onnxruntime as ort

    from runtime import load

    folder = bundle_factory("text-classification", precisions=("fp32", "int8", "fp16"))
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", FakeSession)
    with caplog.at_level(logging.WARNING, "xlmr.runtime"):
        with pytest.raises(Exception, match="fp16 file is for CUDA"):
            load(folder)  # auto -> cuda -> fp16 by default, but CUDA did not start
    assert "serving on CPU" in caplog.text
    pipe = load(folder, precision="int8", threads=3)
    assert pipe.provider == "cpu" and pipe.precision == "int8"
    assert pipe.bundle.session.providers[0][0] == CUDA and pipe.bundle.session.threads == 3
    with pytest.raises(ProviderError, match="no GPU could be initialised"):
        load(folder, provider="cuda", precision="fp32")


@needs_torch
def test_default_precision_per_provider(bundle_factory):
    from runtime.bundle import default_precision
    from runtime.manifest import read_manifest

    m = read_manifest(bundle_factory("text-classification", precisions=("fp32", "int8", "fp16")))
    assert default_precision(m, "cpu") == "int8" and default_precision(m, "cuda") == "fp16"


@needs_torch
def test_cuda_when_available(bundle_factory):
    """On a GPU host: auto picks CUDA and the fp16 file, and answers like the CPU."""
    import onnxruntime as ort

    from runtime import load

    if CUDA not in ort.get_available_providers():
        pytest.skip("no CUDA provider on this host")
    folder = bundle_factory("text-classification", precisions=("fp32", "int8", "fp16"))
    gpu, cpu = load(folder), load(folder, provider="cpu", precision="fp32")
    assert (gpu.provider, gpu.precision) == ("cuda", "fp16")
    texts = ["Paris is nice.", "東京は日本の首都です。"]
    for a, b in zip(gpu(texts, top_k=None), cpu(texts, top_k=None)):
        assert [x["label"] for x in a] == [x["label"] for x in b]
        assert max(abs(x["score"] - y["score"]) for x, y in zip(a, b)) < 1e-2


def test_both_wheels_installed_is_named(monkeypatch, caplog):
    import importlib.metadata as md

    monkeypatch.setattr(md, "version", lambda dist: "1.0")
    with caplog.at_level(logging.WARNING, "xlmr.runtime"):
        assert choose_provider("auto", [CPU]) == "cpu"
    assert "both installed" in caplog.text
