"""What the HTTP layer adds to a warm request, this checkout against an earlier revision: the
handler over one bundle, each in its own process, rounds alternating; medians of 200 warm
requests per case (an embedding through /embed for 1 and 8 texts, token embeddings through
/predict). The earlier revision's runtime and lambda packages are taken with `git archive` and
put first on the child's path.

    python -m benchmarks.experiments.http_overhead.run BUNDLE --before REV [--rounds 4]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CHILD = r"""
import dataclasses, json, logging, pathlib, statistics, sys, time
import xlmr_serverless
from xlmr_serverless.aws_lambda.app import make_handler
from xlmr_serverless.aws_lambda.config import Settings
from xlmr_serverless.aws_lambda.wsgi import http_event
try:
    from xlmr_serverless.aws_lambda.wsgi import LocalContext
except ImportError:
    from xlmr_serverless.aws_lambda.local import LocalContext
h = make_handler(dataclasses.replace(Settings.from_env({}), bundle_dir=pathlib.Path(sys.argv[1])))
logging.disable(logging.CRITICAL)
text = "The quick brown fox jumps over the lazy dog."
def ev(path, body):
    return http_event("POST", path, json.dumps(body), {"content-type": "application/json"})
cases = {"embed-1": ev("/embed", {"inputs": text}), "embed-8": ev("/embed", {"inputs": [text] * 8}),
         "predict-1": ev("/predict", {"inputs": text})}
out = {}
for name, e in cases.items():
    for _ in range(20):
        h(e, LocalContext())
    ms = []
    for _ in range(200):
        t = time.perf_counter()
        assert h(e, LocalContext())["statusCode"] == 200
        ms.append((time.perf_counter() - t) * 1000)
    out[name] = round(statistics.median(ms), 3)
print("RESULT " + json.dumps(out))
"""


def package_of(rev: str, dst: Path) -> Path:
    """The revision's xlmr_serverless package (runtime/, lambda/ as aws_lambda/) under dst."""
    archive = dst / "rev.tar"
    with open(archive, "wb") as f:
        subprocess.run(["git", "archive", rev, "runtime", "lambda", "xlmr_serverless/__init__.py"],
                       cwd=ROOT, stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dst / "src", filter="data")
    pkg = dst / "src" / "xlmr_serverless"
    (dst / "src" / "runtime").rename(pkg / "runtime")
    (dst / "src" / "lambda").rename(pkg / "aws_lambda")
    return dst / "src"


def run(bundle: Path, path: str | None) -> dict[str, float]:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if path:
        env["PYTHONPATH"] = path
    res = subprocess.run([sys.executable, "-c", CHILD, str(bundle)], env=env, capture_output=True,
                         text=True, timeout=600)
    line = next(x for x in res.stdout.splitlines() if x.startswith("RESULT "))
    return dict(json.loads(line[len("RESULT "):]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--before", required=True, help="the earlier revision (a commit)")
    ap.add_argument("--rounds", type=int, default=4)
    a = ap.parse_args()
    from xlmr_serverless.runtime.cpu import isa

    with tempfile.TemporaryDirectory() as tmp:
        before = str(package_of(a.before, Path(tmp)))
        rows = []
        for r in range(a.rounds):
            for who, path in (("before", before), ("this", None)):
                rows.append({"round": r + 1, "code": who, **run(a.bundle, path)})
                print(json.dumps(rows[-1]), flush=True)
    print(f"\nISA {isa()}, medians of 200 warm requests (ms)")
    cases = [k for k in rows[0] if k not in ("round", "code")]
    print("| round | code | " + " | ".join(cases) + " |")
    print("|---:|---|" + "---:|" * len(cases))
    for row in rows:
        print(f"| {row['round']} | {row['code']} | " + " | ".join(f"{row[c]:.3f}" for c in cases) + " |")


if __name__ == "__main__":
    main()
