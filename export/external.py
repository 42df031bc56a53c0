"""ONNX graphs whose weights stay on disk until a tool reads one: onnxruntime's optimizer and
quantizer then hold the tensors they change, not the model (each loaded the whole model and
copied it: docs/design/memory-bounded-export.md).

onnx reads a tensor's external data when a tool calls `numpy_helper.to_array(t)`, resolving
the file against the working directory (the tools pass no base_dir): `weights_from(folder)`
makes that the graph's folder while a tool runs. What the tool leaves external may point at
any file there; `save_consolidated` writes a self-contained copy, one tensor at a time."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ALIGN = 4096  # onnxruntime memory-maps external data at page-aligned offsets
INLINE_BELOW = 1024  # bytes: smaller tensors stay in the graph (onnx's own default threshold)


def load_graph(path: Path) -> onnx.ModelProto:
    """The model without its weights (external tensors stay references)."""
    return onnx.load(str(path), load_external_data=False)


@contextlib.contextmanager
def weights_from(folder: Path) -> Iterator[None]:
    """Run a tool with `folder` as the working directory, where external data resolves."""
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def weights_on_disk(folder: Path) -> Iterator[None]:
    """Run an onnxruntime tool on a graph in `folder` whose weights stay there: they resolve
    against the folder (weights_from) and every read leaves nothing behind (reads_from_disk)."""
    with weights_from(folder), reads_from_disk():
        yield


_TO_ARRAY = numpy_helper.to_array  # onnx's own, whatever reads_from_disk patches


def read_array(tensor: TensorProto, base_dir: str = "") -> np.ndarray:
    """A tensor's values; external data read from the working directory without being kept
    in the tensor (onnx's to_array stores it there for as long as the graph lives)."""
    if tensor.data_location != TensorProto.EXTERNAL:
        return _TO_ARRAY(tensor, base_dir)
    info = _external(tensor)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    count = int(np.prod(tensor.dims)) if tensor.dims else 1
    return np.fromfile(os.path.join(base_dir, info["location"]), dtype=dtype, count=count,
                       offset=int(info.get("offset", 0))).reshape(tuple(tensor.dims))


def _transformers_tool(module: str, name: str) -> Any:
    """A class as onnxruntime's transformer optimizer uses it: its modules import each other
    as top-level modules (their folder is put on sys.path), so `fusion_utils.NumpyHelper` is
    not `onnxruntime.transformers.fusion_utils.NumpyHelper`, and only the first is called."""
    import importlib

    import onnxruntime.transformers.optimizer  # noqa: F401  (puts that folder on sys.path)

    return getattr(importlib.import_module(module), name)


@contextlib.contextmanager
def reads_from_disk() -> Iterator[None]:
    """While a tool runs, every `numpy_helper.to_array` (and the transformer optimizer's own
    NumpyHelper.to_array, the class it really calls) of an external tensor reads it from disk
    and keeps nothing: onnx's stores the data in the tensor, so a pass that reads every weight
    ended up holding the model."""
    NumpyHelper = _transformers_tool("fusion_utils", "NumpyHelper")
    original = NumpyHelper.__dict__["to_array"]

    def helper_to_array(tensor: TensorProto, fill_zeros: bool = False) -> np.ndarray:
        if not fill_zeros and tensor.data_location == TensorProto.EXTERNAL:
            return read_array(tensor)
        return original.__func__(tensor, fill_zeros)

    numpy_helper.to_array = read_array
    NumpyHelper.to_array = staticmethod(helper_to_array)
    try:
        yield
    finally:
        numpy_helper.to_array = _TO_ARRAY
        NumpyHelper.to_array = original


def _external(tensor: TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in tensor.external_data}


def _tensors(proto: onnx.ModelProto) -> Iterator[TensorProto]:
    yield from proto.graph.initializer
    for node in proto.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t


CHUNK = 16 * 1024**2  # bytes per read when a tensor is copied file to file


def append_external(out: BinaryIO, tensor: TensorProto, data: Any | Iterable[Any],
                    location: str) -> None:
    """Write `data` (a buffer, or buffers one after the other) at the next page-aligned offset
    of `out` (the file the graph will name `location`) and point `tensor` there: the one place
    a tensor becomes external data, in the export and in every copy."""
    out.write(b"\0" * (-out.tell() % ALIGN))
    offset = out.tell()
    chunks: Iterable[Any] = [data] if isinstance(data, (bytes, bytearray, memoryview,
                                                        np.ndarray)) else data
    length = 0
    for chunk in chunks:
        length += out.write(chunk)
    del tensor.float_data[:]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)),
                       ("length", str(length))):
        tensor.external_data.add(key=key, value=value)


def _read_chunks(path: Path, offset: int, length: int | None) -> Iterator[bytes]:
    """A file's bytes from `offset` (`length` of them, or to the end), CHUNK at a time: the
    largest tensor (XL's embedding, 2.6 GB) is never in memory whole."""
    with open(path, "rb") as f:
        f.seek(offset)
        left = length
        while left is None or left > 0:
            chunk = f.read(CHUNK if left is None else min(CHUNK, left))
            if not chunk:
                return
            if left is not None:
                left -= len(chunk)
            yield chunk


@contextlib.contextmanager
def new_weights_to_disk(path: Path) -> Iterator[None]:
    """While onnxruntime's optimizer runs, every initializer a fusion adds (Attention's
    concatenated Q/K/V weights) is appended to `path` and kept in the graph as a reference:
    held inline they were copied by each symbolic shape inference the fusions run (XL: 2.8 GB
    of fused weights, three copies at the optimizer's peak). `path` is relative to the graph's
    folder, the working directory (weights_from)."""
    OnnxModel = _transformers_tool("onnx_model", "OnnxModel")
    original = OnnxModel.__dict__["add_initializer"]
    with open(path, "wb") as out:
        def add_initializer(self: Any, tensor: TensorProto, graph_name: Any = None) -> None:
            if tensor.data_location != TensorProto.EXTERNAL:
                data = tensor.raw_data if tensor.HasField("raw_data") else \
                    _TO_ARRAY(tensor).tobytes()
                if len(data) >= INLINE_BELOW:
                    append_external(out, tensor, data, Path(path).name)
                    out.flush()  # a later fusion may read it back
            original(self, tensor, graph_name)

        OnnxModel.add_initializer = add_initializer
        try:
            yield
        finally:
            OnnxModel.add_initializer = original


def save_consolidated(proto: onnx.ModelProto, dst: Path, src_folder: Path,
                      external: bool = True) -> list[Path]:
    """`proto` to `dst` with every weight in `dst.data` (page-aligned) or, when not
    `external`, inline: tensors still on disk are copied from `src_folder`, tensors in memory
    written out; returns the files written. `dst` may live in `src_folder`."""
    dst = Path(dst)
    data = dst.with_name(dst.name + ".data")
    tmp = data.with_name(data.name + ".tmp")  # dst.data may be one of the sources
    with open(tmp, "wb") as out:
        for t in _tensors(proto):
            if t.data_location == TensorProto.EXTERNAL:
                info = _external(t)
                length = int(info["length"]) if "length" in info else None
                chunks = _read_chunks(Path(src_folder) / info["location"],
                                      int(info.get("offset", 0)), length)
                if external:
                    append_external(out, t, chunks, data.name)
                    continue
                raw = b"".join(chunks)
            elif t.HasField("raw_data") and len(t.raw_data) >= INLINE_BELOW:
                raw = t.raw_data
            else:
                continue
            if not external:
                t.raw_data = raw
                t.data_location = TensorProto.DEFAULT
                del t.external_data[:]
                continue
            append_external(out, t, raw, data.name)
            del raw
    if external:
        tmp.replace(data)
        onnx.save_model(proto, str(dst))
        return [dst, data]
    tmp.unlink()
    data.unlink(missing_ok=True)
    onnx.save_model(proto, str(dst))
    return [dst]
