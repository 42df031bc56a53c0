"""The bundle contract: manifest.json as a frozen dataclass, written by export/ and read by
runtime/. One schema version; unknown versions are refused rather than half-understood."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from .errors import BundleError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
DIGEST_NAME = "manifest.json.sha256"  # the manifest's own sha256, written beside it
TOKENIZER_NAME = "tokenizer.json"

@dataclasses.dataclass(frozen=True)
class ModelFile:
    """One ONNX file of the bundle (plus its external-data file, if any)."""

    path: str
    precision: str
    provider: str
    size: int
    sha256: str
    external_data: tuple[dict[str, Any], ...] = ()
    optimized: bool = False
    recipe: str | None = None


@dataclasses.dataclass(frozen=True)
class Manifest:
    """Everything the runtime needs to serve a bundle without transformers."""

    task: str
    architecture: str
    source_model: str
    source_revision: str | None
    max_length: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    files: tuple[ModelFile, ...]
    special_tokens: dict[str, Any]
    tokenizer: dict[str, Any]
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    problem_type: str | None = None
    sentence_embedding: dict[str, Any] | None = None
    parity: dict[str, Any] = dataclasses.field(default_factory=dict)
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    model_id: str | None = None  # the name callers see (never a local path): see `name`
    # the machine the export tuned and judged on: {"isa": runtime.cpu.isa(), "cpu": model}
    tuned_on: dict[str, str] | None = None
    # a trimmed vocabulary: pieces kept of how many, the corpus, coverage on held-out text
    vocabulary: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def name(self) -> str:
        """The model's public name: `model_id`, else the source's last path part (a hub id's
        name, or the export folder's name: a local path is never shown to callers)."""
        return self.model_id or Path(self.source_model.rstrip("/")).name or "model"

    def file_for(self, precision: str) -> ModelFile:
        """The model file of one precision, or a BundleError naming the ones held."""
        for f in self.files:
            if f.precision == precision:
                return f
        held = ", ".join(f.precision for f in self.files)
        raise BundleError(f"bundle holds no {precision} model (it holds: {held})")

    @property
    def precisions(self) -> tuple[str, ...]:
        return tuple(f.precision for f in self.files)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        if self.id2label is not None:
            data["id2label"] = {str(k): v for k, v in self.id2label.items()}
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_manifest(manifest: Manifest, folder: Path) -> Path:
    """manifest.json, and its sha256 beside it: the manifest holds every other file's hash,
    so the digest covers the whole bundle."""
    path = Path(folder) / MANIFEST_NAME
    raw = manifest.to_json().encode("utf-8")
    path.write_bytes(raw)
    (Path(folder) / DIGEST_NAME).write_text(hashlib.sha256(raw).hexdigest() + "\n")
    return path


def check_digest(raw: bytes, digest_text: str | None, where: str) -> str:
    """The manifest's sha256, if it matches the digest recorded beside it; else BundleError."""
    actual = hashlib.sha256(raw).hexdigest()
    if digest_text is None:
        raise BundleError(f"{where}: {DIGEST_NAME} is missing, so nothing vouches for the "
                          "manifest (re-export the bundle)")
    if digest_text.strip() != actual:
        raise BundleError(f"{where}: manifest.json does not match {DIGEST_NAME} (changed "
                          "after export?)")
    return actual


def read_manifest(folder: Path) -> Manifest:
    """Parse manifest.json; a missing file or unknown schema is a BundleError that says which."""
    path = Path(folder) / MANIFEST_NAME
    if not Path(folder).is_dir():
        raise BundleError(f"bundle folder not found: {folder}")
    if not path.is_file():
        raise BundleError(f"not a bundle: {path} is missing")
    raw = path.read_bytes()
    digest = Path(folder) / DIGEST_NAME
    check_digest(raw, digest.read_text() if digest.is_file() else None, str(folder))
    try:
        data = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError) as exc:  # JSON and UTF-8 errors are ValueErrors
        raise BundleError(f"unreadable {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{path}: malformed manifest (not an object)")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{path}: unknown schema_version {version!r} (this runtime reads {SCHEMA_VERSION})"
        )
    try:
        files = tuple(
            ModelFile(**{**f, "external_data": tuple(f.get("external_data", ()))})
            for f in data.pop("files")
        )
        id2label = data.pop("id2label", None)
        if id2label is not None:
            id2label = {int(k): v for k, v in id2label.items()}
        data["inputs"] = tuple(data["inputs"])
        data["outputs"] = tuple(data["outputs"])
        manifest = Manifest(files=files, id2label=id2label, **data)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{path}: malformed manifest ({exc})") from exc
    for name in file_names(manifest):
        if not confined(name):
            raise BundleError(f"{path}: file name {name!r} is not a plain name inside the "
                              "bundle folder")
    return manifest


def confined(name: Any) -> bool:
    """A manifest may only name plain files inside its own folder: no folders, no '..'."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name \
        and "\\" not in name and Path(name).name == name


def file_names(manifest: Manifest) -> list[Any]:
    """Every file a manifest names: the tokenizer, each model file and its weights."""
    return [manifest.tokenizer.get("file")] + [f.path for f in manifest.files] + \
        [e.get("path") for f in manifest.files for e in f.external_data]


def verify_files(manifest: Manifest, folder: Path, full: bool = True) -> None:
    """Check every file the manifest names exists with its size (and sha256 when `full`)."""
    folder = Path(folder)
    entries: list[tuple[str, int, str]] = [
        (manifest.tokenizer["file"], manifest.tokenizer["size"], manifest.tokenizer["sha256"])
    ]
    for f in manifest.files:
        entries.append((f.path, f.size, f.sha256))
        entries.extend((e["path"], e["size"], e["sha256"]) for e in f.external_data)
    problems = []
    for name, size, digest in entries:
        p = folder / name
        if not p.is_file():
            problems.append(f"{name}: missing")
        elif p.stat().st_size != size:
            problems.append(f"{name}: size {p.stat().st_size} != manifest {size}")
        elif full and sha256_file(p) != digest:
            problems.append(f"{name}: sha256 does not match the manifest")
    if problems:
        raise BundleError(f"bundle {folder} is damaged: " + "; ".join(problems))
