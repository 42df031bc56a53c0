"""The Lambda image's file layout, built here without Docker, so that cold starts are measured
on the files Lambda runs: lambda/requirements.txt installed by pip into one folder with its
bytecode compiled (as the image's `pip install` does), the package copied where the
checkout's lambda/Dockerfile copies it and compiled where that Dockerfile compiles it
(Lambda's /var/task is read-only: bytecode not in the image is compiled again at every cold
start), the bundle verified at "build" where it does that, and a bare interpreter (a venv
with nothing in it) to run it all. Read from each checkout's own Dockerfile, so an older
checkout is measured as its image was.

    python -m tests.image_layout [--source CHECKOUT]    # prints how to run it
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASK_ROOT = "${LAMBDA_TASK_ROOT}/"
# what the image's runtime brings itself: the runtime interface client and what it needs (the
# public base images run their own copy of it)
RUNTIME_CLIENT = ["awslambdaric==4.2.2", "simplejson==4.3.0"]


def copied(dockerfile: Path) -> dict[str, str]:
    """What the image copies from a checkout into the task root, and where: the Dockerfile's
    own COPY lines (source -> path under ${LAMBDA_TASK_ROOT})."""
    pairs = {}
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "COPY" and words[2].startswith(TASK_ROOT):
            pairs[words[1]] = words[2][len(TASK_ROOT):]
    return pairs


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def site(requirements: Path, cache: Path) -> tuple[Path, Path]:
    """(interpreter, site folder) with the image's requirements installed and compiled; built
    once per requirements file's content."""
    key = hashlib.sha256(requirements.read_bytes() + " ".join(RUNTIME_CLIENT).encode()).hexdigest()[:12]
    folder = cache / f"site-{key}"
    python = folder / "py" / "bin" / "python"
    if not (folder / "done").exists():
        shutil.rmtree(folder, ignore_errors=True)
        base = getattr(sys, "_base_executable", sys.executable)
        _run([base, "-m", "venv", "--without-pip", str(folder / "py")])
        _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--compile",
              "--disable-pip-version-check", "--target", str(folder / "task"),
              "-r", str(requirements), *RUNTIME_CLIENT])
        (folder / "done").write_text(key)
    return python, folder / "task"


def layout(source: Path = ROOT, cache: Path | None = None) -> tuple[Path, Path]:
    """(interpreter, task root) for `source`'s code in the image's layout: the installed site
    with this checkout's package placed in it. Each call places the code afresh."""
    cache = cache or Path(tempfile.gettempdir()) / "xlmr-image-layout"
    python, packages = site(source / "lambda" / "requirements.txt", cache)
    task = cache / f"task-{hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:12]}"
    shutil.rmtree(task, ignore_errors=True)
    task.mkdir(parents=True)
    for entry in packages.iterdir():  # the site's packages, linked (not copied) beside ours
        (task / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    place_package(source, task, python)
    return python, task


def place_package(source: Path, task: Path, python: Path | str = sys.executable) -> None:
    """The checkout's package where its Dockerfile copies it, compiled where it compiles it."""
    for src, dst in copied(dockerfile(source)).items():
        s, d = source / src, task / dst
        d.parent.mkdir(parents=True, exist_ok=True)
        if s.is_dir():
            shutil.copytree(s, d, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(s, d)
    if "compileall" in dockerfile(source).read_text():
        _run([str(python), "-m", "compileall", "-q", str(task / "xlmr_serverless")])


# what the image's environment sets that changes how its processes run, not where they look
CARRIED_ENV = ("LD_PRELOAD", "TCMALLOC_")
LIBRARY_DIRS = ("/usr/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib")


def dockerfile_env(text: str) -> dict[str, str]:
    """The KEY=VALUE pairs of a Dockerfile's ENV instructions, later ones winning."""
    env: dict[str, str] = {}
    for line in text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "ENV":
            env.update(w.partition("=")[::2] for w in words[1:] if "=" in w)
    return env


def image_env(source: Path = ROOT) -> dict[str, str]:
    """The environment that checkout's image gives its processes, for this machine: its
    allocator (LD_PRELOAD, the same library file found in this machine's library folders)
    and that allocator's settings. A library missing here is an error: a start measured
    without it would not be the image's."""
    env = {k: v for k, v in dockerfile_env(dockerfile(source).read_text()).items()
           if k.startswith(CARRIED_ENV)}
    if env.get("LD_PRELOAD"):
        found = []
        for name in (Path(p).name for p in env["LD_PRELOAD"].split()):
            here = [Path(d) / name for d in LIBRARY_DIRS if (Path(d) / name).is_file()]
            if not here:
                raise FileNotFoundError(
                    f"the image preloads {name}, not found in {', '.join(LIBRARY_DIRS)}: "
                    "install it (Debian: libtcmalloc-minimal4) to run the image's layout")
            found.append(str(here[0]))
        env["LD_PRELOAD"] = " ".join(found)
    return env


def dockerfile(source: Path) -> Path:
    return source / "lambda" / "Dockerfile"


def verifies_at_build(source: Path) -> bool:
    """Whether that checkout's image hashes its bundle at build (else every cold start does)."""
    return "xlmr_serverless.runtime.verify" in dockerfile(source).read_text()


def verify_at_build(python: Path, task: Path, bundle: Path) -> None:
    """What lambda/Dockerfile runs once the bundle is copied in: every file hashed, and the
    marker that spares the image's cold starts the hashing written beside the bundle."""
    subprocess.run([str(python), "-m", "xlmr_serverless.runtime.verify", str(bundle)],
                   check=True, env={**os.environ, "PYTHONPATH": str(task)}, cwd=task,
                   stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, default=ROOT, help="a checkout (default: this one)")
    a = ap.parse_args(argv)
    python, task = layout(a.source)
    env = " ".join(f"{k}={v}" for k, v in image_env(a.source).items())
    print(f"{env} PYTHONPATH={task} {python}".strip())


if __name__ == "__main__":
    main()
