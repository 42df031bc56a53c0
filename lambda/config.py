"""Every environment variable the Lambda adapter reads, in one place (runtime/ reads none)."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ..runtime.budget import Budget
from ..runtime.session import TELEMETRY_OFF

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
    # SnapStart: sequence lengths of the forward passes run before the snapshot (lambda/snapstart.py)
    warm_up_lengths: tuple[int, ...] = (8, 64, 256)
    # what one request may cost (runtime/budget.py; docs/limits.md says why each default)
    max_input_chars: int = 200_000
    max_tokens: int = 2048
    max_output_values: int = 1 << 24
    max_top_k: int = 100
    max_template_chars: int = 500
    max_response_bytes: int = 6_000_000  # Lambda's synchronous response limit is 6 MB

    @property
    def budget(self) -> Budget:
        return Budget(**{name: getattr(self, name) for name in BUDGET_VARIABLES})

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
            # every file's sha256, once: at image build, S3 download or first load (runtime/verify.py)
            verify=e.get("VERIFY_BUNDLE", "true").lower() == "true",
            batch_size=int(e.get("BATCH_SIZE", 16)),
            io_binding=auto_flag("XLMR_IO_BINDING", e.get("XLMR_IO_BINDING", "auto")),
            warm_up_lengths=lengths("XLMR_WARM_UP", e["XLMR_WARM_UP"]) if "XLMR_WARM_UP" in e
            else cls.warm_up_lengths,  # the field's default
            **{name: int(e[var]) for name, var in BUDGET_VARIABLES.items() if e.get(var)},
        )


# each limit of the cost model and the variable that sets it (its default: the field's)
BUDGET_VARIABLES = {"max_input_chars": "MAX_INPUT_CHARS", "max_tokens": "MAX_TOKENS",
                    "max_output_values": "MAX_OUTPUT_VALUES", "max_top_k": "MAX_TOP_K",
                    "max_template_chars": "MAX_TEMPLATE_CHARS",
                    "max_response_bytes": "MAX_RESPONSE_BYTES"}


def lengths(name: str, value: str) -> tuple[int, ...]:
    """'8,64,256' -> (8, 64, 256); 'none' or empty -> () (no warm-up); anything else an error."""
    v = value.strip().lower()
    if v in ("", "none"):
        return ()
    try:
        out = tuple(int(x) for x in v.split(","))
    except ValueError:
        out = ()
    if not out or min(out) < 1:
        raise ValueError(f"{name} must be sequence lengths such as 8,64,256, or none; "
                         f"got {value!r}")
    return out


def auto_flag(name: str, value: str) -> bool | None:
    """'auto' (or empty) -> None, 'true'/'false' -> bool; anything else a clear error."""
    v = value.strip().lower()
    if v in ("", "auto"):
        return None
    if v in ("true", "false"):
        return v == "true"
    raise ValueError(f"{name} must be auto, true or false, got {value!r}")


# What the served process's environment holds unless the deployment set it otherwise. Only
# /tmp is writable on Lambda: every cache a library might write points there; and a public
# endpoint serving someone's model sends no usage telemetry (runtime/session.py).
SAFE_ENVIRONMENT: dict[str, str] = {
    **dict.fromkeys(("HOME", "XDG_CACHE_HOME", "HF_HOME", "NUMBA_CACHE_DIR", "MPLCONFIGDIR"),
                    "/tmp"),
    "TOKENIZERS_PARALLELISM": "false",
    **TELEMETRY_OFF,
}


def lambda_safe_environment() -> None:
    """SAFE_ENVIRONMENT, where the deployment left a variable unset (before onnxruntime's
    import: the handler calls it first thing)."""
    for var, value in SAFE_ENVIRONMENT.items():
        os.environ.setdefault(var, value)
