"""Every environment variable the Lambda adapter reads, in one place (runtime/ reads none)."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

DEFAULT_BUNDLE_DIR = "/opt/bundle"  # where lambda/Dockerfile copies the bundle


@dataclasses.dataclass(frozen=True)
class Settings:
    bundle_dir: Path
    model_s3_uri: str | None
    provider: str
    precision: str | None
    max_body_bytes: int
    max_inputs: int
    cors_origin: str | None
    log_inputs: bool
    verify: bool
    batch_size: int
    io_binding: bool | None = None  # None: on for CUDA, off on CPU

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        e = dict(os.environ if env is None else env)
        return cls(
            bundle_dir=Path(e.get("BUNDLE_DIR", DEFAULT_BUNDLE_DIR)),
            model_s3_uri=e.get("MODEL_S3_URI") or None,
            provider=e.get("XLMR_PROVIDER", "auto"),
            precision=e.get("XLMR_PRECISION") or None,
            max_body_bytes=int(e.get("MAX_BODY_BYTES", 1_000_000)),
            max_inputs=int(e.get("MAX_INPUTS", 64)),
            cors_origin=e.get("CORS_ALLOW_ORIGIN") or None,
            log_inputs=e.get("LOG_INPUTS", "false").lower() == "true",
            # an image's bundle is immutable: check sizes at start, full sha256 on S3 download
            verify=e.get("VERIFY_BUNDLE", "false").lower() == "true",
            batch_size=int(e.get("BATCH_SIZE", 16)),
            io_binding=auto_flag("XLMR_IO_BINDING", e.get("XLMR_IO_BINDING", "auto")),
        )


def auto_flag(name: str, value: str) -> bool | None:
    """'auto' (or empty) -> None, 'true'/'false' -> bool; anything else a clear error."""
    v = value.strip().lower()
    if v in ("", "auto"):
        return None
    if v in ("true", "false"):
        return v == "true"
    raise ValueError(f"{name} must be auto, true or false, got {value!r}")


def lambda_safe_environment() -> None:
    """Only /tmp is writable on Lambda: point every cache a library might write there."""
    for var in ("HOME", "XDG_CACHE_HOME", "HF_HOME", "NUMBA_CACHE_DIR", "MPLCONFIGDIR"):
        os.environ.setdefault(var, "/tmp")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
