"""Every environment variable the Lambda adapter reads, in one place (runtime/ reads none)."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

from ..runtime.budget import Budget
from ..runtime.session import TELEMETRY_OFF

PREFIX = "XLMR_"  # every variable this adapter reads starts with it


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the served function is told by its environment; each field's default is the one
    place its default is written."""

    bundle_dir: Path = Path("/opt/bundle")  # where lambda/Dockerfile copies the bundle
    model_s3_uri: str | None = None
    provider: str = "auto"
    precision: str | None = None
    max_body_bytes: int = 1_000_000
    max_inputs: int = 64
    cors_origin: str | None = None
    log_inputs: bool = False
    # every file's sha256, once: at image build, S3 download or first load (runtime/verify.py)
    verify: bool = True
    batch_size: int = 16
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
    renamed: tuple[str, ...] = ()  # variables read under their old, unprefixed names

    @property
    def budget(self) -> Budget:
        return Budget(**{name: getattr(self, name) for name in BUDGET_FIELDS})

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        e = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        renamed = []
        for field, (name, parse) in VARIABLES.items():
            var = PREFIX + name
            if var not in e and name in UNPREFIXED and name in e:
                e[var] = e[name]
                renamed.append(name)
            if var in e:
                values[field] = parse(var, e[var])
        return cls(**values, renamed=tuple(renamed))


def text(var: str, value: str) -> str:
    return value


def optional(var: str, value: str) -> str | None:
    return value or None


def integer(var: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{var} must be an integer, got {value!r}") from None


def flag(var: str, value: str) -> bool:
    """'true' (any case) -> True, anything else False."""
    return value.strip().lower() == "true"


def folder(var: str, value: str) -> Path:
    return Path(value)


BUDGET_FIELDS = ("max_input_chars", "max_tokens", "max_output_values", "max_top_k",
                 "max_template_chars", "max_response_bytes")


# each field's variable (after the prefix) and how its value is read
VARIABLES: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "bundle_dir": ("BUNDLE_DIR", folder),
    "model_s3_uri": ("MODEL_S3_URI", optional),
    "provider": ("PROVIDER", text),
    "precision": ("PRECISION", optional),
    "max_body_bytes": ("MAX_BODY_BYTES", integer),
    "max_inputs": ("MAX_INPUTS", integer),
    "cors_origin": ("CORS_ALLOW_ORIGIN", optional),
    "log_inputs": ("LOG_INPUTS", flag),
    "verify": ("VERIFY_BUNDLE", flag),
    "batch_size": ("BATCH_SIZE", integer),
    "io_binding": ("IO_BINDING", lambda var, v: auto_flag(var, v)),
    "warm_up_lengths": ("WARM_UP", lambda var, v: lengths(var, v)),
    **{field: (field.upper(), integer) for field in BUDGET_FIELDS},
}

# the variables that were read without the prefix before it: still read under those names
# (the prefixed name wins), with a warning at load, until the next release
UNPREFIXED = frozenset({"BUNDLE_DIR", "MODEL_S3_URI", "MAX_BODY_BYTES", "MAX_INPUTS",
                        "CORS_ALLOW_ORIGIN", "LOG_INPUTS", "VERIFY_BUNDLE", "BATCH_SIZE",
                        *(field.upper() for field in BUDGET_FIELDS)})


def variable(field: str) -> str:
    """The environment variable that sets `field`."""
    return PREFIX + VARIABLES[field][0]


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
