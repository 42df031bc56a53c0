"""A bundle's files against its manifest's sha256, hashed once: at image build (lambda/Dockerfile
runs `python -m xlmr_serverless.runtime.verify /opt/bundle`; the image's digest guards the
files from then on, so no cold start hashes them again), where an S3 download lands, or at the
first load in a sandbox. A marker keyed by the manifest's digest, holding the folder and each
file's name, size and modification time, records it; a file changed since misses the marker
and is hashed (and refused if it differs).

    python -m xlmr_serverless.runtime.verify BUNDLE
"""
from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

from .errors import BundleError
from .manifest import MANIFEST_NAME, Manifest, read_manifest, verify_files

MARKS = Path(tempfile.gettempdir()) / "xlmr-verified"  # this sandbox's marks (Lambda: /tmp)
BUILT = ".xlmr-verified"  # beside the bundle folder: the marks written at image build


def _stamps(folder: Path) -> tuple[str, dict[bool, str]]:
    """The marker's name (the manifest's digest) and what it must hold: the folder and each
    file's name, size and modification time, to the nanosecond (False) and to whole seconds
    (True: the image build's marks, since an image layer keeps no finer time than that)."""
    digest = hashlib.sha256((folder / MANIFEST_NAME).read_bytes()).hexdigest()
    files = sorted((p.name, p.stat()) for p in folder.iterdir() if p.is_file())
    return digest, {whole: json.dumps([str(folder.resolve())] + [
        (name, st.st_size, st.st_mtime_ns // (10**9 if whole else 1)) for name, st in files])
        for whole in (False, True)}


def build_marks(folder: Path) -> Path:
    """Where the image build records a verified bundle: beside it (/opt/.xlmr-verified)."""
    return folder.resolve().parent / BUILT


def mark_verified(folder: Path, marks: Path | None = None) -> None:
    """Record that `folder`'s files were just hashed against its manifest: in this sandbox's
    marks, or in `marks` (the image build's, to whole seconds)."""
    name, stamps = _stamps(folder)
    mark = (marks or MARKS) / name
    try:
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.write_text(stamps[marks is not None])
    except OSError:  # a read-only /tmp costs a re-hash next time, nothing else
        pass


def verified(folder: Path) -> bool:
    """Whether a marker (the image build's or this sandbox's) vouches for these very files."""
    name, stamps = _stamps(folder)  # read once, compared with both marks
    for marks, whole_seconds in ((build_marks(folder), True), (MARKS, False)):
        try:
            if (marks / name).read_text() == stamps[whole_seconds]:
                return True
        except OSError:
            pass
    return False


def verify_once(manifest: Manifest, folder: Path) -> bool:
    """Every file's sha256 against the manifest, unless a marker says these very files were
    hashed already (at image build, or earlier in this sandbox). Returns whether it hashed."""
    if verified(folder):
        return False
    verify_files(manifest, folder, full=True)
    mark_verified(folder)
    return True


def main(argv: list[str] | None = None) -> int:
    """Hash every file of each bundle named and mark it verified beside it (image build)."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    for arg in args:
        folder = Path(arg)
        try:
            verify_files(read_manifest(folder), folder, full=True)
        except BundleError as exc:
            print(f"{folder}: {exc}", file=sys.stderr)
            return 1
        mark_verified(folder, build_marks(folder))
        print(f"{folder}: every file matches its manifest's sha256; marked in "
              f"{build_marks(folder)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
