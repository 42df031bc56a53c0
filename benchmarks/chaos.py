"""Chaos: an S3 bundle download killed with SIGKILL mid-way, then a cold start; and a /tmp
too small for the bundle. An S3 endpoint on loopback (moto's server), the Lambda adapter's
own loading code in child processes; each child then answers the hostile requests of
tests/hostile.py for its bundle (their statuses recorded) and a valid one after them. Not
a test: it prints and records what happened.

    python -m benchmarks.chaos BUNDLE [--output DIR]     (root, for the small tmpfs)
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import machine

CHILD = """
import dataclasses, json, sys, time
from pathlib import Path
from xlmr_serverless.aws_lambda.app import make_handler
from xlmr_serverless.aws_lambda.config import Settings
from xlmr_serverless.aws_lambda.local import LocalContext
from xlmr_serverless.aws_lambda.wsgi import http_event
import xlmr_serverless.aws_lambda.s3 as s3
root = Path(sys.argv[1])
real = s3.fetch_bundle
s3.fetch_bundle = lambda uri: real(uri, root)   # /tmp of this run
t0 = time.perf_counter()
h = make_handler(dataclasses.replace(Settings.from_env(), model_s3_uri=sys.argv[2]))
r = h(http_event("POST", "/embed", json.dumps({"inputs": "hello"}), {}), LocalContext())
init_s = time.perf_counter() - t0
from tests.hostile import CASES   # then the hostile requests, on the bundle it just got
hostile = {c.name: h(http_event("POST", c.route, c.body, {}), LocalContext())["statusCode"]
           for c in CASES if c.task == "feature-extraction" or c.route == "/tokenize"}
again = h(http_event("POST", "/embed", json.dumps({"inputs": "hello"}), {}), LocalContext())
print(json.dumps({"status": r["statusCode"], "body": r["body"][:120], "init_s": init_s,
                  "hostile": hostile, "after_hostile": again["statusCode"]}))
"""


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))
            if p.is_file()}


def child(root: Path, uri: str, env: dict[str, str]) -> subprocess.Popen:
    env = {**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # tests.hostile
    return subprocess.Popen([sys.executable, "-c", CHILD, str(root), uri], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def killed_download(root: Path, uri: str, env: dict[str, str]) -> dict[str, Any]:
    """SIGKILL once the weights file is partly downloaded (over 1 MB), then a cold start."""
    proc = child(root, uri, env)
    deadline = time.time() + 60
    while time.time() < deadline:
        partial = [p for p in root.glob(".bundle-*/*.data*") if p.stat().st_size > 1 << 20]
        if partial:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = tree(root)
    second = child(root, uri, env)
    answer = json.loads(second.communicate(timeout=300)[0].strip().splitlines()[-1])
    return {"left_by_the_kill": left, "cold_start_after": answer, "after": tree(root)}


def full_tmp(uri: str, env: dict[str, str], size_mb: int) -> dict[str, Any]:
    """A tmpfs smaller than the bundle as /tmp: the download fails, nothing is half left,
    the function answers 503 rather than dying."""
    mnt = Path(tempfile.mkdtemp(prefix="xlmr-full-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mnt)],
                   check=True)
    try:
        out = child(mnt, uri, env).communicate(timeout=300)[0]
        answer = json.loads(out.strip().splitlines()[-1])
        return {"tmp_mb": size_mb, "answer": answer, "left": tree(mnt)}
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        mnt.rmdir()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("bundle")
    p.add_argument("--output", default="")
    a = p.parse_args()
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1",
           "POWERTOOLS_METRICS_NAMESPACE": "chaos"}
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="x", aws_secret_access_key="x")
    s3.create_bucket(Bucket="models")
    for f in Path(a.bundle).iterdir():
        s3.upload_file(str(f), "models", f"chaos/{f.name}")
    uri = "s3://models/chaos/"
    root = Path(tempfile.mkdtemp(prefix="xlmr-chaos-"))
    bundle_mb = sum(f.stat().st_size for f in Path(a.bundle).iterdir()) / 1e6
    result = {"machine": machine(), "bundle_mb": round(bundle_mb, 1),
              "killed_download": killed_download(root, uri, env),
              "full_tmp": full_tmp(uri, env, max(1, int(bundle_mb // 2)))}
    server.stop()
    print(json.dumps(result, indent=1))
    if a.output:
        Path(a.output).mkdir(parents=True, exist_ok=True)
        (Path(a.output) / "chaos.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
