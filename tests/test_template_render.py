"""template.yaml rendered as AWS would: SAM's own transform (aws-sam-cli's translator, in
.venv-sam) for each auth choice, then the template's conditions resolved for those
parameters, so the test sees what a deployment would get."""
from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from tests.conftest import ROOT

SAM_PY = ROOT / ".venv-sam/bin/python"
CHOICES = {
    "iam": {"AuthType": "AWS_IAM", "EnableRestApi": "true", "RestApiKeys": "true",
            "ModelBucket": "models", "ReservedConcurrency": "5"},
    "jwt": {"AuthType": "JWT", "JwtIssuer": "https://issuer.example", "JwtAudience": "client-1",
            "ProvisionedConcurrency": "2", "SnapStart": "false"},
    "open": {"AuthType": "NONE", "EnableRestApi": "true", "ModelBucket": "models",
             "ModelPrefix": "team/v1", "EphemeralStorageMB": "4096", "SnapStart": "false"},
}
TRANSFORM = """
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse
class NoManagedPolicies:
    def load(self): return {}
template = yaml_parse(open(sys.argv[1]).read())
# `sam build` fills ImageUri; the transform wants one
template["Resources"]["InferenceFunction"]["Properties"]["ImageUri"] = "1.dkr.ecr.us-east-1.amazonaws.com/x:1"
out = transform(template, json.loads(sys.argv[2]), NoManagedPolicies())
print(json.dumps(out))
"""


def parameters(template: dict[str, Any], given: dict[str, str]) -> dict[str, Any]:
    return {k: str(given.get(k, v.get("Default", ""))) for k, v in template["Parameters"].items()}


NO_VALUE = object()


def resolve(node: Any, params: dict[str, Any], conditions: dict[str, Any]) -> Any:
    """Fn::If, Condition and Ref-to-parameter as CloudFormation evaluates them at deploy time
    (AWS::NoValue drops the key or item); other intrinsics are left as they are."""
    if isinstance(node, list):
        items = [resolve(x, params, conditions) for x in node]
        return [x for x in items if x is not NO_VALUE]
    if not isinstance(node, dict):
        return node
    if node == {"Ref": "AWS::NoValue"}:
        return NO_VALUE
    if set(node) == {"Fn::If"}:
        name, yes, no = node["Fn::If"]
        return resolve(yes if condition(name, params, conditions) else no, params, conditions)
    if set(node) == {"Ref"} and node["Ref"] in params:
        return params[node["Ref"]]
    items = {k: resolve(v, params, conditions) for k, v in node.items()}
    return {k: v for k, v in items.items() if v is not NO_VALUE}


def condition(name: str, params: dict[str, Any], conditions: dict[str, Any]) -> bool:
    def ev(expr: Any) -> Any:
        if isinstance(expr, dict):
            (op, arg), = expr.items()
            if op == "Fn::Equals":
                return str(ev(arg[0])) == str(ev(arg[1]))
            if op == "Fn::Not":
                return not ev(arg[0])
            if op == "Fn::And":
                return all(ev(a) for a in arg)
            if op == "Fn::Or":
                return any(ev(a) for a in arg)
            if op == "Condition":
                return ev(conditions[arg])
            if op == "Ref":
                return params[arg]
        return expr
    return bool(ev(conditions[name]))


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, Any]]:
    if not SAM_PY.exists():
        pytest.skip("aws-sam-cli not installed (scripts/setup.sh sam)")
    out = {}
    for name, given in CHOICES.items():
        res = subprocess.run([str(SAM_PY), "-c", TRANSFORM, str(ROOT / "template.yaml"),
                              json.dumps(given)], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1"})
        assert res.returncode == 0, res.stderr[-3000:]
        template = json.loads(res.stdout)
        params = parameters(template, given)
        conditions = template["Conditions"]
        created = {k: v for k, v in template["Resources"].items()  # a false Condition: none
                   if "Condition" not in v or condition(v["Condition"], params, conditions)}
        out[name] = resolve(created, params, conditions)
        out[name]["_conditions"] = {c: condition(c, params, template["Conditions"])
                                    for c in template["Conditions"]}
    return out


def http_api_body(resources: dict[str, Any]) -> dict[str, Any]:
    return next(v for v in resources.values()
                if isinstance(v, dict) and v.get("Type") == "AWS::ApiGatewayV2::Api"
                )["Properties"]["Body"]


def test_the_chosen_auth_guards_every_route(rendered):
    from xlmr_serverless.aws_lambda.routes import ROUTES

    expect = {"iam": [{"AWS_IAM": []}], "jwt": [{"Jwt": []}], "open": []}
    for name, resources in rendered.items():
        body = http_api_body(resources)
        ops = {(m.upper(), p): op for p, methods in body["paths"].items()
               for m, op in methods.items()}
        assert set(ops) == {(r.method, r.path) for r in ROUTES}, name
        for key, op in ops.items():
            assert op["security"] == expect[name], (name, key)
            assert op["x-amazon-apigateway-integration"]["type"] == "aws_proxy"
    jwt = http_api_body(rendered["jwt"])["components"]["securitySchemes"]["Jwt"]
    assert jwt["x-amazon-apigateway-authorizer"]["jwtConfiguration"] == {
        "issuer": "https://issuer.example", "audience": ["client-1"]}
    assert "Jwt" not in http_api_body(rendered["iam"])["components"]["securitySchemes"]


def test_the_rest_api_follows_the_same_auth_with_api_keys(rendered):
    iam, open_ = rendered["iam"], rendered["open"]
    method = iam["RestApi"]["Properties"]["Body"]["paths"]["/{proxy+}"]["x-amazon-apigateway-any-method"]
    assert method["security"] == [{"sigv4": [], "api_key": []}]
    assert {"RestApiKey", "RestUsagePlan", "RestUsagePlanKey"} <= set(iam)
    plan = iam["RestUsagePlan"]["Properties"]
    assert plan["Throttle"] == {"RateLimit": "50", "BurstLimit": "100"}
    assert not iam["_conditions"]["UseJwt"] and iam["_conditions"]["RestKeys"]
    assert not {"RestApiKey", "RestUsagePlan"} & set(open_)  # keys only where asked for
    open_method = open_["RestApi"]["Properties"]["Body"]["paths"]["/{proxy+}"][
        "x-amazon-apigateway-any-method"]
    assert open_method["security"] == []
    assert "RestApi" not in rendered["jwt"]


def test_function_limits_logs_storage_and_s3_policy(rendered):
    iam, open_ = rendered["iam"], rendered["open"]
    fn = iam["InferenceFunction"]["Properties"]
    assert fn["ReservedConcurrentExecutions"] == "5"
    assert "ReservedConcurrentExecutions" not in open_["InferenceFunction"]["Properties"]
    assert fn["EphemeralStorage"] == {"Size": "512"}  # SnapStart's most
    assert open_["InferenceFunction"]["Properties"]["EphemeralStorage"] == {"Size": "4096"}
    assert fn["LoggingConfig"]["LogGroup"] == {"Ref": "FunctionLogGroup"}
    assert iam["FunctionLogGroup"]["Properties"]["RetentionInDays"] == "30"
    policy = json.dumps(iam["InferenceFunctionRole"]["Properties"]["Policies"])
    assert "${ModelBucket}/*" in policy and "${ModelPrefix}" not in policy  # empty prefix
    open_policy = json.dumps(open_["InferenceFunctionRole"]["Properties"]["Policies"])
    assert "${ModelBucket}/${ModelPrefix}/*" in open_policy
    assert "Policies" not in rendered["jwt"]["InferenceFunctionRole"]["Properties"] or \
        "s3:GetObject" not in json.dumps(rendered["jwt"]["InferenceFunctionRole"])
    assert open_["InferenceFunction"]["Properties"]["Environment"]["Variables"]["XLMR_MODEL_S3_URI"] \
        == {"Fn::Sub": "s3://${ModelBucket}/${ModelPrefix}/"}


def test_provisioned_concurrency_is_a_parameter_off_by_default(rendered):
    """On the `live` alias every deploy publishes (what provisioned concurrency needs), and
    the APIs call that alias, so the warm instances are the ones that answer."""
    def alias(resources):
        return next(v["Properties"] for v in resources.values()
                    if isinstance(v, dict) and v.get("Type") == "AWS::Lambda::Alias")

    assert alias(rendered["jwt"])["Name"] == "live"
    assert alias(rendered["jwt"])["ProvisionedConcurrencyConfig"] == \
        {"ProvisionedConcurrentExecutions": "2"}
    for off in ("iam", "open"):
        assert "ProvisionedConcurrencyConfig" not in alias(rendered[off])
    integrations = json.dumps(http_api_body(rendered["jwt"]))
    assert "InferenceFunctionAliaslive" in integrations


def rules_broken(template: dict[str, Any], given: dict[str, str]) -> list[str]:
    """The template's Rules that refuse these parameters, as CloudFormation checks them before
    it deploys anything."""
    params = parameters(template, given)
    broken = []
    for name, rule in template.get("Rules", {}).items():
        conds = {"when": rule.get("RuleCondition", True)}
        conds.update({f"a{i}": a["Assert"] for i, a in enumerate(rule["Assertions"])})
        if condition("when", params, conds) and not all(
                condition(f"a{i}", params, conds) for i in range(len(rule["Assertions"]))):
            broken.append(name)
    return broken


def template_as_written() -> dict[str, Any]:
    """template.yaml as written (before SAM's transform), short-form intrinsics in long form."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: {  # !Ref, !Equals, ...
        ("Ref" if suffix == "Ref" else "Fn::" + suffix):
            loader.construct_sequence(node, deep=True) if isinstance(node, yaml.SequenceNode)
            else loader.construct_scalar(node)})
    return yaml.load((ROOT / "template.yaml").read_text(), Loader=Loader)


def test_rules_refuse_what_cannot_deploy():
    """The template's Rules, evaluated as CloudFormation does before it deploys anything:
    JWT without its issuer and audience, and JWT on the REST API (which has no JWT
    authorizer), are refused; every rendered choice passes."""
    template = template_as_written()
    for given in CHOICES.values():
        assert rules_broken(template, given) == [], given
    assert rules_broken(template, {"AuthType": "JWT", "JwtIssuer": "https://issuer.example"}) \
        == ["JwtNeedsIssuerAndAudience"]
    assert rules_broken(template, {**CHOICES["jwt"], "EnableRestApi": "true"}) == [
        "RestApiHasNoJwt"]


def test_snapstart_is_on_by_default_and_refuses_what_it_excludes(rendered):
    """SnapStart (AWS Lambda Developer Guide, "Improving startup performance with Lambda
    SnapStart": Python 3.12+ base images, published versions only; no provisioned
    concurrency, EFS, or ephemeral storage over 512 MB) on the image function by default;
    off where asked; the combinations it excludes refused before anything deploys."""
    def function(resources):
        return next(v["Properties"] for v in resources.values()
                    if isinstance(v, dict) and v.get("Type") == "AWS::Lambda::Function")

    assert function(rendered["iam"])["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    assert function(rendered["iam"])["PackageType"] == "Image"
    for off in ("jwt", "open"):
        assert "SnapStart" not in function(rendered[off]), off
    template = template_as_written()
    assert template["Parameters"]["SnapStart"]["Default"] == "true"
    assert rules_broken(template, {"ProvisionedConcurrency": "1"}) == [
        "SnapStartTakesNoProvisionedConcurrency"]
    assert rules_broken(template, {"EphemeralStorageMB": "1024"}) == ["SnapStartTakes512MBOfTmp"]
    assert rules_broken(template, {"ProvisionedConcurrency": "1", "EphemeralStorageMB": "1024",
                                   "SnapStart": "false"}) == []
