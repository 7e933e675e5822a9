"""AWS: the ECS task definitions validated against botocore's RegisterTaskDefinition input
shape (what `aws ecs register-task-definition --cli-input-json` checks before sending),
and the SAM template linted by cfn-lint (which runs the SAM transform). Then what each
must carry: secrets from SSM/Secrets Manager, awslogs, the health check command, stop
timeouts above the drain, and settings the app's production guard accepts.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.deploy._tools import (
    BEAT,
    DEPLOY,
    GRACEFUL_TIMEOUT,
    HEALTHCHECK,
    IMAGE,
    ROOT,
    SECRET_VALUES,
    WEB_UVICORN,
    WORKER,
    env_list_to_dict,
    load_json,
    python_tool,
    report,
    run,
    settings_from,
    unknown_settings,
)

pytestmark = pytest.mark.deploy

ECS = DEPLOY / "aws" / "ecs"
TASK_DEFINITIONS = sorted(ECS.glob("task-definition-*.json"))
SAM_TEMPLATE = DEPLOY / "aws" / "lambda" / "template.yaml"
COMMANDS = {"app": WEB_UVICORN, "worker": WORKER, "beat": BEAT}


@pytest.fixture(scope="module")
def register_task_definition() -> Any:
    import botocore.session

    model = botocore.session.get_session().get_service_model("ecs")
    return model.operation_model("RegisterTaskDefinition").input_shape


def shape_errors(document: dict[str, Any], shape: Any) -> str:
    from botocore.validate import ParamValidator

    return str(ParamValidator().validate(document, shape).generate_report())


def container(document: dict[str, Any]) -> dict[str, Any]:
    (definition,) = document["containerDefinitions"]
    return dict(definition)


# --- ECS ----------------------------------------------------------------------------------


def test_all_task_definitions_present() -> None:
    assert {path.stem.removeprefix("task-definition-") for path in TASK_DEFINITIONS} == set(
        COMMANDS
    )


@pytest.mark.parametrize("path", TASK_DEFINITIONS, ids=lambda p: p.stem)
def test_task_definition_matches_the_ecs_api(path: Path, register_task_definition: Any) -> None:
    assert shape_errors(load_json(path), register_task_definition) == ""


def test_ecs_validation_can_fail(register_task_definition: Any) -> None:
    document = load_json(ECS / "task-definition-app.json")
    broken = copy.deepcopy(document)
    container(broken)  # one container, as the others assume
    broken["containerDefinitions"][0]["healthCheck"]["command"] = "slipway healthcheck"
    broken["containerDefinitions"][0]["stopTimout"] = 30
    errors = shape_errors(broken, register_task_definition)
    assert "healthCheck.command" in errors
    assert "stopTimout" in errors


@pytest.mark.parametrize("path", TASK_DEFINITIONS, ids=lambda p: p.stem)
def test_task_definition_contract(path: Path) -> None:
    document = load_json(path)
    kind = path.stem.removeprefix("task-definition-")
    definition = container(document)
    assert document["requiresCompatibilities"] == ["FARGATE"]
    assert document["networkMode"] == "awsvpc"
    assert definition["image"].startswith(f"{IMAGE}:")
    assert definition["command"] == COMMANDS[kind]
    assert definition["user"].split(":")[0] == "10001"
    assert definition["readonlyRootFilesystem"] is True
    mounts = {mount["containerPath"] for mount in definition["mountPoints"]}
    assert "/tmp" in mounts, "the read-only root needs a writable /tmp"
    volumes = {volume["name"] for volume in document["volumes"]}
    assert {mount["sourceVolume"] for mount in definition["mountPoints"]} <= volumes
    assert definition["linuxParameters"]["initProcessEnabled"] is True

    logs = definition["logConfiguration"]
    assert logs["logDriver"] == "awslogs"
    assert {"awslogs-group", "awslogs-region", "awslogs-stream-prefix"} <= set(logs["options"])

    # Secrets come from SSM Parameter Store or Secrets Manager, never the plain environment.
    env = env_list_to_dict(definition["environment"], "name", "value")
    secrets = env_list_to_dict(definition["secrets"], "name", "valueFrom")
    assert {"SECRET_KEY", "DATABASE_URL"} <= set(secrets)
    assert set(secrets).isdisjoint(env)
    for name, arn in secrets.items():
        assert arn.startswith(("arn:aws:ssm:", "arn:aws:secretsmanager:")), name
    assert document["executionRoleArn"].startswith("arn:aws:iam::"), "needed to read the secrets"
    assert unknown_settings(set(env) | set(secrets)) == set()
    assert definition["stopTimeout"] <= 120, "Fargate's maximum"


def test_app_health_check_and_drain() -> None:
    definition = container(load_json(ECS / "task-definition-app.json"))
    check = definition["healthCheck"]
    assert check["command"] == ["CMD", *HEALTHCHECK]
    assert check["startPeriod"] >= 10
    # SIGKILL follows SIGTERM after stopTimeout: the drain must fit.
    assert definition["stopTimeout"] > GRACEFUL_TIMEOUT
    env = env_list_to_dict(definition["environment"], "name", "value")
    assert int(env["GRACEFUL_TIMEOUT"]) < definition["stopTimeout"]
    port = definition["portMappings"][0]["containerPort"]
    assert str(port) == env["PORT"]
    mounts = {mount["containerPath"] for mount in definition["mountPoints"]}
    assert env["PROMETHEUS_MULTIPROC_DIR"] in mounts


@pytest.mark.parametrize("path", TASK_DEFINITIONS, ids=lambda p: p.stem)
def test_settings_accept_the_task_environment(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    definition = container(load_json(path))
    env = env_list_to_dict(definition["environment"], "name", "value")
    # ECS resolves each secret into an environment variable at task start.
    for name in env_list_to_dict(definition["secrets"], "name", "valueFrom"):
        env[name] = SECRET_VALUES.get(name, "https://public@sentry.example.com/1")
    settings = settings_from(monkeypatch, env)
    assert settings.is_production
    assert settings.production_problems() == []


# --- Lambda (SAM) ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cfn_lint(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One cfn-lint run (it takes seconds to start) over the template and a copy with two
    known mistakes; findings grouped by file."""
    broken = (
        SAM_TEMPLATE.read_text(encoding="utf-8")
        .replace("Runtime: python3.11", "Runtime: python2.7")
        .replace("!GetAtt SlipwayFunction.Arn", "!GetAtt SlipwayFunctoin.Arn")
    )
    broken_path = tmp_path_factory.mktemp("sam") / "template.yaml"
    broken_path.write_text(broken, encoding="utf-8")
    result = run(
        [python_tool("cfn-lint"), "--format", "parseable", str(SAM_TEMPLATE), str(broken_path)]
    )
    findings: dict[str, list[str]] = {"template": [], "broken": []}
    for line in result.stdout.splitlines():
        if line.startswith(str(broken_path)):
            findings["broken"].append(line)
        elif line.strip():
            findings["template"].append(line)
    return {"result": result, **findings}


def test_sam_template_passes_cfn_lint(cfn_lint: dict[str, Any]) -> None:
    assert cfn_lint["template"] == [], report(cfn_lint["result"])


def test_cfn_lint_can_fail(cfn_lint: dict[str, Any]) -> None:
    assert cfn_lint["result"].returncode != 0
    broken = "\n".join(cfn_lint["broken"])
    assert "python2.7" in broken
    assert "SlipwayFunctoin" in broken


class _CfnLoader:
    """YAML with CloudFormation's short-form tags (!Ref, !Sub, ...) kept as plain values."""

    @staticmethod
    def load(path: Path) -> dict[str, Any]:
        import yaml

        class Loader(yaml.SafeLoader):
            pass

        def tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
            if isinstance(node, yaml.ScalarNode):
                value: Any = loader.construct_scalar(node)
            elif isinstance(node, yaml.SequenceNode):
                value = loader.construct_sequence(node)
            else:
                value = loader.construct_mapping(node)  # type: ignore[arg-type]
            return {suffix: value}

        Loader.add_multi_constructor("!", tag)
        document: dict[str, Any] = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)
        return document


def test_sam_function_contract() -> None:
    template = _CfnLoader.load(SAM_TEMPLATE)
    function = template["Resources"]["SlipwayFunction"]
    assert function["Type"] == "AWS::Serverless::Function"
    properties = function["Properties"]
    assert properties["Handler"] == "slipway.lambda_handler.handler"
    runtime = template["Globals"]["Function"]["Runtime"]
    pinned = (ROOT / ".python-version").read_text(encoding="utf-8").strip()
    assert runtime == f"python{pinned}", "Lambda runs the Python the project is tested on"
    events = properties["Events"].values()
    assert {event["Type"] for event in events} == {"HttpApi"}
    assert {event["Properties"]["Path"] for event in events} == {"/", "/{proxy+}"}
    env = properties["Environment"]["Variables"]
    assert unknown_settings(set(env)) == set()
    for name in ("SECRET_KEY", "DATABASE_URL"):
        assert "resolve:secretsmanager" in json.dumps(env[name]), (
            f"{name} must come from Secrets Manager"
        )
    # API Gateway's integration timeout is 30 s.
    assert template["Globals"]["Function"]["Timeout"] < 30
    code_uri = (SAM_TEMPLATE.parent / properties["CodeUri"]).resolve()
    assert code_uri == ROOT / "build" / "lambda", "where deploy/aws/lambda/build.sh writes"
    assert (DEPLOY / "aws" / "lambda" / "build.sh").stat().st_mode & 0o111


def test_settings_accept_the_lambda_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    template = _CfnLoader.load(SAM_TEMPLATE)
    variables = template["Resources"]["SlipwayFunction"]["Properties"]["Environment"]["Variables"]
    parameters = {"Stage": "production", "AllowedHosts": "api.example.com", "CorsOrigins": ""}
    env: dict[str, str] = {}
    for name, value in variables.items():
        if isinstance(value, dict) and "Ref" in value:
            env[name] = parameters[value["Ref"]]
        elif isinstance(value, dict) and "Sub" in value:
            # {{resolve:secretsmanager:...:SecretString:KEY}}: CloudFormation puts the value in.
            key = value["Sub"].rsplit(":", 1)[-1].rstrip("}")
            env[name] = SECRET_VALUES[key]
        else:
            env[name] = str(value)
    settings = settings_from(monkeypatch, env)
    assert settings.is_production
    assert settings.production_problems() == []
