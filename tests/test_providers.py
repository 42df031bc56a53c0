"""Provider, thread and IO-binding selection, tested with faked provider lists, cgroup files and a
CPU session that claims CUDA (the CUDA path itself runs only where a GPU is: see
test_cuda_when_available)."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from tests.conftest import needs_bundles
from xlmr_serverless.runtime.binding import use_io_binding
from xlmr_serverless.runtime.errors import ProviderError
from xlmr_serverless.runtime.session import CPU, CUDA, choose_provider, usable_cpus

pytestmark = pytest.mark.serving


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
    """Stands in for InferenceSession where CUDA was asked for; its graph is the real one."""

    real = None  # onnxruntime's class, kept before the tests replace it

    def __init__(self, path, opts, providers, disabled_optimizers=None):
        self.providers, self.threads = providers, opts.intra_op_num_threads
        self.path, self.disabled_optimizers = path, disabled_optimizers

    def get_outputs(self):
        return FakeSession.real(self.path, providers=[CPU]).get_outputs()

    def get_providers(self):
        return [CPU]  # CUDA was asked for but could not start: onnxruntime falls back silently

    def get_inputs(self):
        return []


@needs_bundles
def test_auto_falls_back_to_cpu_and_says_so(bundle_factory, monkeypatch, caplog):
    import onnxruntime as ort

    from xlmr_serverless.runtime import load

    FakeSession.real = FakeSession.real or ort.InferenceSession

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
    assert pipe.bundle.session.disabled_optimizers is None  # a CUDA session keeps every fusion
    with pytest.raises(ProviderError, match="no GPU could be initialised"):
        load(folder, provider="cuda", precision="fp32")


@needs_bundles
def test_cpu_sessions_leave_layer_norm_and_add_apart(bundle_factory, monkeypatch, tmp_path):
    """onnxruntime fuses a residual Add and its LayerNormalization into SkipLayerNormalization
    at load, slower on CPU than the two (docs/design/skip-layer-norm.md): the runtime's CPU
    session keeps them apart. onnxruntime's own optimized graph, written where it ran, is the
    witness, beside a session with every optimizer, which fuses them."""
    onnx = pytest.importorskip("onnx")  # to read the graphs: the export side's package
    import onnxruntime as ort

    from xlmr_serverless.runtime import session

    real = ort.InferenceSession
    written = []

    def witnessed(path, opts, **kw):
        written.append(tmp_path / f"optimized{len(written)}.onnx")
        opts.optimized_model_filepath = str(written[-1])
        return real(path, opts, **kw)

    path = bundle_factory("feature-extraction") / "model.int8.onnx"  # exported before
    monkeypatch.setattr(ort, "InferenceSession", witnessed)
    served, used = session.create_session(path, "cpu", 1)
    every = witnessed(str(path), ort.SessionOptions(), providers=[CPU])
    ops = [[n.op_type for n in onnx.load(str(p), load_external_data=False).graph.node]
           for p in written]
    assert used == "cpu" and "SkipLayerNormalization" not in ops[0]
    assert ops[0].count("LayerNormalization") == 1 + 2 * 2  # embeddings + 2 per layer
    assert ops[1].count("SkipLayerNormalization") == 4  # what the fusion would have made
    x = {"input_ids": np.array([[0, 5, 6, 2]]), "attention_mask": np.ones((1, 4), np.int64)}
    np.testing.assert_allclose(served.run(None, x)[0], every.run(None, x)[0], atol=1e-4)


@needs_bundles
def test_default_precision_per_provider(bundle_factory):
    from xlmr_serverless.runtime.manifest import read_manifest
    from xlmr_serverless.runtime.precisions import preferred

    m = read_manifest(bundle_factory("text-classification", precisions=("fp32", "int8", "fp16")))
    assert preferred(m.precisions, "cpu") == "int8" and preferred(m.precisions, "cuda") == "fp16"
    assert preferred(("fp32", "fp16"), "cpu") == "fp32" and preferred(("int8",), "cuda") == "int8"


@needs_bundles
def test_cuda_when_available(bundle_factory):
    """On a GPU host: auto picks CUDA and the fp16 file, and answers like the CPU."""
    import onnxruntime as ort

    from xlmr_serverless.runtime import load

    if CUDA not in ort.get_available_providers():
        pytest.skip("no CUDA provider on this host")
    folder = bundle_factory("text-classification", precisions=("fp32", "int8", "fp16"))
    gpu, cpu = load(folder), load(folder, provider="cpu", precision="fp32")
    unbound = load(folder, io_binding=False)
    assert (gpu.provider, gpu.precision, gpu.bundle.io_binding) == ("cuda", "fp16", True)
    assert not unbound.bundle.io_binding
    texts = ["Paris is nice.", "東京は日本の首都です。"]
    assert gpu(texts, top_k=None) == unbound(texts, top_k=None)
    for a, b in zip(gpu(texts, top_k=None), cpu(texts, top_k=None)):
        assert [x["label"] for x in a] == [x["label"] for x in b]
        assert max(abs(x["score"] - y["score"]) for x, y in zip(a, b)) < 1e-2


def test_io_binding_where_it_pays():
    assert use_io_binding(None, "cuda") and not use_io_binding(None, "cpu")
    assert use_io_binding(True, "cpu") and not use_io_binding(False, "cuda")


CASES = {"fill-mask": ("Paris is the <mask> of France. <mask>!", {"top_k": 3}),
         "feature-extraction": (["hello", "مرحبا بالعالم 🌍 long " * 5], {}),
         "question-answering": ({"question": "Where?", "context": "I live in 東京 and Paris."},
                                {"top_k": 2})}


@needs_bundles
@pytest.mark.parametrize("task", sorted(CASES))
def test_io_binding_gives_the_same_answers(bundle_factory, task):
    """The bound path (onnxruntime's IOBinding on the CPU device here) answers bit for bit as
    session.run does, multi-output graphs (QA) in the graph's output order included."""
    from xlmr_serverless.runtime import load

    folder = bundle_factory(task)
    bound, plain = load(folder, io_binding=True), load(folder)
    assert bound.bundle.io_binding and not plain.bundle.io_binding
    inputs, params = CASES[task]
    assert bound(inputs, **params) == plain(inputs, **params)


class CudaLikeSession:
    """A real CPU session that says it runs on CUDA and records the devices IO binding asks
    for, so the CUDA branch runs end to end on a host without a GPU."""

    real: type

    def __init__(self, path, opts, providers):
        assert providers[0][0] == CUDA
        self.inner, self.devices = self.real(path, opts, providers=[CPU]), []

    def get_providers(self):
        return [CUDA, CPU]

    def get_inputs(self):
        return self.inner.get_inputs()

    def get_outputs(self):
        return self.inner.get_outputs()

    def run(self, *a, **k):
        raise AssertionError("on CUDA the runtime should go through IO binding")

    def io_binding(self):
        session = self

        class Binding:
            inner = self.inner.io_binding()

            def bind_ortvalue_input(self, name, value):
                self.inner.bind_ortvalue_input(name, value)

            def bind_output(self, name, device, device_id=0):
                session.devices.append(("output", device, device_id))
                self.inner.bind_output(name, "cpu", 0)

            def __getattr__(self, attr):
                return getattr(self.inner, attr)

        return Binding()

    def run_with_iobinding(self, binding):
        self.inner.run_with_iobinding(binding.inner)


@needs_bundles
def test_cuda_branch_binds_inputs_and_outputs_on_the_gpu(bundle_factory, monkeypatch):
    import onnxruntime as ort

    from xlmr_serverless.runtime import load

    folder = bundle_factory("fill-mask")
    cpu = load(folder, provider="cpu", precision="fp32")
    devices: list = []
    real_from_numpy = ort.OrtValue.ortvalue_from_numpy

    def from_numpy(array, device="cpu", device_id=0):
        devices.append(("input", device, device_id, array.dtype))
        return real_from_numpy(array, "cpu", 0)

    CudaLikeSession.real = ort.InferenceSession
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", CudaLikeSession)
    monkeypatch.setattr(ort.OrtValue, "ortvalue_from_numpy", staticmethod(from_numpy))
    gpu = load(folder)  # auto: CUDA taken, no fp16 file in this bundle so fp32, IO binding on
    assert (gpu.provider, gpu.precision, gpu.bundle.io_binding) == ("cuda", "fp32", True)
    text = "Le <mask> est bleu."
    assert gpu(text, top_k=4) == cpu(text, top_k=4)
    assert devices == [("input", "cuda", 0, np.dtype("int64"))] * 2
    assert gpu.bundle.session.devices == [("output", "cuda", 0)]
    assert not load(folder, io_binding=False).bundle.io_binding


def test_both_wheels_installed_is_named(monkeypatch, caplog, tmp_path):
    from xlmr_serverless.runtime import session

    (tmp_path / "onnxruntime-1.32.0.dist-info").mkdir()
    assert not session.both_wheels_installed(tmp_path)
    (tmp_path / "onnxruntime_gpu-1.32.0.dist-info").mkdir()
    assert session.both_wheels_installed(tmp_path)
    assert not session.both_wheels_installed()  # this environment: the CPU wheel alone
    monkeypatch.setattr(session, "both_wheels_installed", lambda: True)
    with caplog.at_level(logging.WARNING, "xlmr.runtime"):
        assert choose_provider("auto", [CPU]) == "cpu"
    assert "both installed" in caplog.text


@needs_bundles
def test_the_tokenizer_waits_only_for_the_sessions_gil_bound_start(bundle_factory):
    """open_bundle starts the tokenizer (which holds the GIL for all of its build) once
    onnxruntime is in its native session build (which lets the GIL go): the signal comes from
    the profile hook on onnxruntime's own call, not from the fallback at the end, and the hook
    is gone afterwards."""
    import sys
    import threading

    import onnxruntime as ort

    from xlmr_serverless.runtime import session

    assert hasattr(ort.capi._pybind_state.InferenceSession, session.NATIVE_INIT)

    class Probe(threading.Event):
        from_hook: bool | None = None

        def set(self) -> None:
            if self.from_hook is None:  # the first set: the hook's or the fallback's
                self.from_hook = sys.getprofile() is not None
            super().set()

    folder = bundle_factory("feature-extraction")
    probe = Probe()
    made, used = session.create_session(folder / "model.int8.onnx", "cpu", 1, native=probe)
    assert used == "cpu" and probe.is_set() and probe.from_hook is True
    assert sys.getprofile() is None
    assert made.get_outputs()[0].name == "last_hidden_state"

    def theirs(frame, what, arg):  # a profiler this thread already had is handed back
        return None

    sys.setprofile(theirs)
    try:
        session.create_session(folder / "model.int8.onnx", "cpu", 1, native=threading.Event())
        assert sys.getprofile() is theirs
    finally:
        sys.setprofile(None)
