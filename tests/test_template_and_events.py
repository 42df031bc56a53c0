"""template.yaml passes cfn-lint and `sam validate --lint`, the images' Dockerfiles hadolint; it
wires every route; the sample events in events/ run through `xlmr invoke` as `sam local invoke
-e` would run them."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bundles import with_heads
from tests.conftest import ROOT, needs_bundles

SAM = shutil.which("sam") or str(ROOT / ".venv-sam/bin/sam")


def test_cfn_lint():
    res = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), str(ROOT / "template.yaml")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_dockerfiles_pass_hadolint():
    """hadolint (Docker's linter, ShellCheck on the RUN lines) on both images, which cannot be
    built here: pinned packages, quoted paths, no `cd` in a RUN. The rules set aside are set
    aside in the Dockerfiles, each with its reason."""
    res = subprocess.run([str(Path(sys.executable).parent / "hadolint"), "--no-color",
                          "--failure-threshold", "info", "lambda/Dockerfile",
                          "lambda/Dockerfile.gpu"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.skipif(not os.path.exists(SAM), reason="aws-sam-cli not installed (scripts/setup.sh sam)")
def test_sam_validate_lint():
    res = subprocess.run([SAM, "validate", "--lint", "-t", str(ROOT / "template.yaml"),
                          "--region", "us-east-1"], capture_output=True, text=True,
                         env={**os.environ, "SAM_CLI_TELEMETRY": "0"}, timeout=300)
    assert res.returncode == 0 and "is a valid SAM Template" in res.stdout + res.stderr, \
        res.stdout + res.stderr


def test_template_routes_match_the_handler():
    import yaml  # pyyaml comes with cfn-lint

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    t = yaml.load((ROOT / "template.yaml").read_text(), Loader=Loader)
    fn = t["Resources"]["InferenceFunction"]["Properties"]
    from xlmr_serverless.aws_lambda.routes import ROUTES

    wanted = {(r.method, r.path) for r in ROUTES}
    routes = {(e["Properties"]["Method"], e["Properties"]["Path"]) for e in fn["Events"].values()}
    assert routes == wanted, f"Events: missing {wanted - routes}, extra {routes - wanted}"
    # every route is in the API's definition, which puts the authorizer on it: a route left
    # out would be served without authorization
    body = t["Resources"]["HttpApi"]["Properties"]["DefinitionBody"]["paths"]
    defined = {(m.upper(), p) for p, ops in body.items() for m, op in ops.items()
               if "security" in op}
    assert defined == wanted, f"DefinitionBody: missing {wanted - defined}, extra {defined - wanted}"
    assert fn["PackageType"] == "Image"
    assert t["Resources"]["InferenceFunction"]["Metadata"]["Dockerfile"] == "lambda/Dockerfile"
    assert {"MemorySize", "Architecture", "Timeout", "ModelBucket", "AuthType"} <= set(t["Parameters"])


sys.path.insert(0, str(ROOT / "events"))
import make_events  # noqa: E402  (events/ is a folder of data and its generator, not a package)

EVENTS = make_events.samples()


def test_sample_events_are_generated_from_the_route_table():
    """Every route (and /predict for every task) has its events, as make_events writes them."""
    http_base = json.loads((ROOT / "events/base-http-api-proxy.json").read_text())
    rest_base = json.loads((ROOT / "events/base-aws-proxy.json").read_text())
    committed = {p.name for p in (ROOT / "events").glob("*-*.json")
                 if p.name.startswith(("http-", "rest-"))}
    assert committed == {f"{k}-{n}.json" for k in ("http", "rest") for n in EVENTS}
    for name, (method, path, body) in EVENTS.items():
        for kind, make, base in (("http", make_events.http_event, http_base),
                                 ("rest", make_events.rest_event, rest_base)):
            stored = json.loads((ROOT / "events" / f"{kind}-{name}.json").read_text())
            assert stored == make(base, method, path, body), f"{kind}-{name}: run make_events.py"


@pytest.mark.serving
@needs_bundles
@pytest.mark.parametrize("kind", ["http", "rest"])
@pytest.mark.parametrize("name", sorted(EVENTS))
def test_sample_events_through_xlmr_invoke(bundle_factory, kind, name, capsys):
    """`xlmr invoke` in-process (the handler is built once per bundle, like a warm container);
    tests/test_cli.py runs the command itself in a subprocess."""
    import xlmr_serverless.cli

    event = ROOT / "events" / f"{kind}-{name}.json"
    bundle = bundle_factory(make_events.task_for(name), **with_heads(make_events.heads_for(name)))
    rc = xlmr_serverless.cli.main(["invoke", "--bundle", str(bundle),
                        "--event", str(event)])
    out = capsys.readouterr().out
    assert rc == 0
    response = json.loads(out[out.index("{\n"):])
    assert response["statusCode"] == 200, response
    assert json.loads(response["body"])


def test_the_gpu_image_starts_as_sagemaker_starts_it(tmp_path):
    """SageMaker runs `docker run IMAGE serve` and talks to port 8080: the GPU image's CMD is
    `serve`, and the script its Dockerfile writes execs waitress on 0.0.0.0:8080 with the WSGI
    app the tests serve (run here with a waitress-serve stand-in that records its argv)."""
    import re
    import stat

    text = (ROOT / "lambda" / "Dockerfile.gpu").read_text()
    assert text.rstrip().splitlines()[-1] == 'CMD ["serve"]'
    script = re.search(r"printf '(.*?)' \\\s*> /opt/venv/bin/serve", text, re.S)
    assert script, "the Dockerfile writes /opt/venv/bin/serve with printf"
    serve = tmp_path / "serve"
    serve.write_text(script.group(1).encode().decode("unicode_escape"))
    serve.chmod(serve.stat().st_mode | stat.S_IEXEC)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "waitress-serve").write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "argv"}\n')
    (fake / "waitress-serve").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    assert subprocess.run([str(serve)], env=env, timeout=30).returncode == 0
    args = (tmp_path / "argv").read_text().split()
    assert args[0] == "--listen=0.0.0.0:8080" and args[1] == "--call"
    module, name = args[2].split(":")
    from importlib import import_module

    assert callable(getattr(import_module(module), name))
