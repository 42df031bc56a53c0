"""Calibration text, held apart from the text the accuracy gate judges, and what is measured
on it: each activation channel's range (for smoothing) and a quantized file's output error
against fp32 (for the sensitivity pass and to rank recipes). Tuning on the judged sentences
would let a recipe pass the gate by fitting them."""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import onnx

from . import validate

# Built-in calibration text: none of it in validate.DEFAULT_TEXTS (what the gate judges).
CALIBRATION_TEXTS = (
    "Der Hund schläft unter dem Tisch, während draußen der Regen fällt.",
    "Le gouvernement a annoncé de nouvelles mesures pour soutenir les agriculteurs.",
    "Il treno per Milano parte alle otto e mezza dal binario tre.",
    "We are going to the beach tomorrow morning if the weather stays nice.",
    "Новосибирск — третий по численности населения город России.",
    "Το καλοκαίρι στην Κρήτη είναι πολύ ζεστό.",
    "مكتبة الإسكندرية من أشهر المكتبات في العالم.",
    "שלום, מה שלומך היום?",
    "मुझे सुबह चाय पीना बहुत पसंद है।",
    "大阪は美味しい食べ物で有名な都市です。",
    "我们明天早上去公园散步。",
    "부산은 아름다운 해변으로 유명합니다.",
    "เชียงใหม่มีวัดเก่าแก่มากมาย",
    "Please reset my password, I cannot log in to my account since yesterday.",
    "The stock market fell sharply after the central bank raised interest rates.",
    "Yes!",
    "A 2019 study of 3,000 patients found no significant difference between the treatments.",
    "Vamos a cenar en un restaurante cerca de la playa.",
    "O Brasil é o maior país da América do Sul.",
    "Amsterdam staat bekend om zijn grachten en fietsen.",
    "Kraków jest jednym z najstarszych miast w Polsce.",
    "İstanbul, Avrupa ile Asya arasında yer alan bir şehirdir.",
    "Hà Nội là thủ đô của Việt Nam.",
    "This movie was terrible, I want my money back 😡",
    # short inputs: a few tokens, where the <s> token's outlier activations weigh the most
    "No.", "Great!", "Why not?", "Danke.", "Merci beaucoup !", "はい。",
)
EVERY = 3  # of a validation file, every EVERY-th line calibrates and the rest is judged


@dataclasses.dataclass(frozen=True)
class TextSplit:
    """The texts the gate judges, the texts calibration reads, and how they were split."""

    judged: list[str]
    calibration: list[str]
    note: str


def split_texts(validation_file: Path | None) -> TextSplit:
    """The user's validation file split (every EVERY-th line calibrates, the rest is judged,
    no line in both), or the built-in sentences: validate's to judge, these to calibrate."""
    texts = validate.read_texts(validation_file)
    if validation_file is None or len(texts) < 2 * EVERY or texts == list(validate.DEFAULT_TEXTS):
        judged = [t for t in texts if t not in CALIBRATION_TEXTS]
        where = "the validation file" if validation_file else "the built-in validation sentences"
        return TextSplit(judged, list(CALIBRATION_TEXTS),
                         f"{len(CALIBRATION_TEXTS)} built-in calibration sentences; the gate "
                         f"judges {len(judged)} line(s) of {where}, none of them calibrated on")
    calibration = texts[::EVERY]
    judged = [t for i, t in enumerate(texts) if i % EVERY and t not in calibration]
    return TextSplit(judged, calibration,
                     f"every {EVERY}rd line of the validation file ({len(calibration)}); the "
                     f"gate judges the other {len(judged)}, none of them calibrated on")


def real_rows(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """x's vectors (last axis) at real positions: padding left out where x is per token."""
    flat = x.reshape(-1, x.shape[-1])
    if mask is not None and flat.shape[0] == mask.size:
        return flat[mask.reshape(-1).astype(bool)]
    return flat


@contextlib.contextmanager
def probe(model: Path, tensors: list[str]) -> Iterator[Callable[[dict[str, Any]], dict[str, np.ndarray]]]:
    """A function feed -> {tensor: value} for inner tensors of `model`, from one fp32 session
    that exposes them as extra outputs (weights stay on disk); the probe file is removed after."""
    from onnx import helper

    from .external import load_graph

    proto = load_graph(model)
    known = {o.name for o in proto.graph.output}
    for name in tensors:
        if name not in known:
            proto.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                                    None))
    path = Path(model).with_name(Path(model).stem + ".stats.onnx")  # beside its weights
    onnx.save_model(proto, str(path))
    try:
        sess = validate.onnx_session(path)
        yield lambda feed: dict(zip(tensors, sess.run(tensors, feed)))
    finally:
        path.unlink(missing_ok=True)


def channel_absmax(model: Path, feeds: list[dict[str, Any]],
                   tensors: list[str]) -> dict[str, np.ndarray]:
    """Each tensor's largest |value| per channel (last axis) over the feeds' real positions."""
    out: dict[str, np.ndarray] = {}
    with probe(model, tensors) as run:
        for feed in feeds:
            values = run(feed)
            for name in tensors:
                rows = real_rows(values[name], feed.get("attention_mask"))
                peak = np.abs(rows).max(0) if len(rows) else np.zeros(rows.shape[-1], np.float32)
                out[name] = np.maximum(out.get(name, 0.0), peak)
    return out


def token_peaks(model: Path, feeds: list[dict[str, Any]],
                tensors: list[str]) -> dict[str, np.ndarray]:
    """Each per-token tensor's largest |value| of every real token over the feeds, as one
    flat array; tensors not shaped [batch, sequence, channels] are left out."""
    out: dict[str, list[np.ndarray]] = {}
    with probe(model, tensors) as run:
        for feed in feeds:
            mask = feed["attention_mask"].astype(bool)
            for name, x in run(feed).items():
                if x.ndim == 3 and x.shape[:2] == mask.shape:
                    out.setdefault(name, []).append(np.abs(x).max(-1)[mask])
    return {name: np.concatenate(parts) for name, parts in out.items()}


def outputs(path: Path, feeds: list[dict[str, Any]]) -> list[list[np.ndarray]]:
    """A file's outputs on every feed, from one session."""
    sess = validate.onnx_session(path)
    return [validate.run_onnx(sess, feed) for feed in feeds]


def output_error(reference: list[list[np.ndarray]], got: list[list[np.ndarray]],
                 feeds: list[dict[str, Any]]) -> float:
    """A file's output error against the reference outputs: the relative L2 error of each
    input row (a sentence, over its real positions), averaged, so that a short sentence
    weighs as much as a long one. One continuous figure for every task, which ranks recipes
    and nodes where the gate's own measure (top-1, share of sentences) moves in steps."""
    errors: list[float] = []
    for ref, out, feed in zip(reference, got, feeds):
        mask = feed["attention_mask"].reshape(-1, feed["attention_mask"].shape[-1])
        err = np.zeros(len(mask))
        norm = np.zeros(len(mask))
        for r, g in zip(ref, out):
            r, g = r.astype(np.float64), g.astype(np.float64)
            if r.shape[0] != len(mask):  # not per input row (mask rows, spans): one row each
                errors.append(float(np.linalg.norm(g - r)) / max(float(np.linalg.norm(r)), 1e-12))
                continue
            per_token = r.ndim >= 3 and r.shape[1] == mask.shape[1]
            w = mask.reshape(mask.shape + (1,) * (r.ndim - 2)) if per_token else 1.0
            err += (np.square(g - r) * w).reshape(len(r), -1).sum(1)
            norm += (np.square(r) * w).reshape(len(r), -1).sum(1)
        live = norm > 0
        errors += list(np.sqrt(err[live] / norm[live]))
    return float(np.mean(errors)) if errors else 0.0
