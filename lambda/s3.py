"""A bundle from S3 into /tmp: manifest first, then every file it names, each checked against
its sha256, the folder renamed into place atomically and reused by later cold starts in the
same sandbox."""
from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..runtime.errors import BundleError
from ..runtime.manifest import (
    DIGEST_NAME,
    MANIFEST_NAME,
    check_digest,
    file_names,
    read_manifest,
    verify_files,
)
from ..runtime.verify import mark_verified


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise BundleError(f"XLMR_MODEL_S3_URI must look like s3://bucket/prefix/, got {uri!r}")
    bucket, _, prefix = uri[5:].partition("/")
    return bucket, prefix.rstrip("/")


def remove_stale_downloads(root: Path) -> list[Path]:
    """Half-downloaded folders a killed init left in /tmp: they would fill it for the life of
    the sandbox. One init runs at a time in a sandbox, so none is in use."""
    stale = [p for p in root.glob(".bundle-*") if p.is_dir()]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def fetch_bundle(uri: str, root: Path = Path("/tmp"), client: Any = None) -> Path:
    """Download (or reuse) the bundle at `uri`; returns its local folder."""
    import boto3

    s3 = client or boto3.client("s3")
    bucket, prefix = parse_s3_uri(uri)
    def read(name: str) -> bytes:
        key = f"{prefix}/{name}" if prefix else name
        try:
            body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:  # botocore raises many client errors
            raise BundleError(f"cannot read s3://{bucket}/{key}: {exc}") from exc
        return body

    raw = read(MANIFEST_NAME)
    check_digest(raw, read(DIGEST_NAME).decode("ascii", "replace"), uri)
    final = root / f"bundle-{hashlib.sha256(raw).hexdigest()[:16]}"
    if (final / MANIFEST_NAME).is_file():
        return final  # same sandbox, same bundle: reuse
    remove_stale_downloads(root)
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-", dir=root))
    try:
        (tmp / MANIFEST_NAME).write_bytes(raw)
        (tmp / DIGEST_NAME).write_text(hashlib.sha256(raw).hexdigest() + "\n")
        manifest = read_manifest(tmp)  # refuses any name that would leave the folder
        for name in file_names(manifest):
            s3.download_file(bucket, f"{prefix}/{name}" if prefix else name, str(tmp / name))
        verify_files(manifest, tmp, full=True)
        tmp.rename(final)
        mark_verified(final)  # hashed once, here: the load does not hash again
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
