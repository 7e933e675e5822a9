"""More platforms: Railway (railway.json + deploy/railway/), Render (render.yaml) and Azure
Container Apps (deploy/azure/).

Neither Railway's nor Render's JSON schema ships in a package the registries here serve, so
their files get structure checks: the keys each platform documents (closed sets, so a
misspelt key fails), references that must resolve, and the contract's commands. Azure's
YAML is checked against the ContainerApp and Job models of Microsoft's own SDK
(azure-mgmt-appcontainers): every key must be a field of the model at that place, with a
value of the field's type or one of its enum values. Each platform's environment must give
the app settings its production guard accepts.
"""

from __future__ import annotations

import copy
import enum
import re
import types
import typing
from typing import Any

import pytest

from tests.deploy._tools import (
    BEAT,
    DEPLOY,
    GRACEFUL_TIMEOUT,
    MIGRATE,
    ROOT,
    SECRET_VALUES,
    WEB_GUNICORN,
    WEB_UVICORN,
    WORKER,
    env_list_to_dict,
    load_json,
    load_yaml,
    settings_from,
    split_command,
    unknown_settings,
)

pytestmark = pytest.mark.deploy

DOCS = ROOT / "docs" / "deploy"
SECTIONS = ("## Prerequisites", "## Deploy", "## Migrations", "## Secrets", "## Roll back")
CRON = re.compile(r"^(\S+\s+){4}\S+$")


def unknown_keys(document: Any, allowed: dict[str, Any], path: str = "") -> list[str]:
    """Keys of `document` outside `allowed` (a nested spec: a set of leaf keys, or a dict
    whose values are the spec of that key's value; lists are checked item by item)."""
    problems: list[str] = []
    if isinstance(document, list):
        for index, item in enumerate(document):
            problems.extend(unknown_keys(item, allowed, f"{path}[{index}]"))
        return problems
    if not isinstance(document, dict):
        return problems
    for key, value in document.items():
        if key not in allowed:
            problems.append(f"{path}/{key}")
        elif isinstance(allowed[key], dict):
            problems.extend(unknown_keys(value, allowed[key], f"{path}/{key}"))
    return problems


def leaf(*names: str) -> dict[str, None]:
    return dict.fromkeys(names)


# --- Railway ----------------------------------------------------------------------------

RAILWAY_SPEC: dict[str, Any] = {
    "$schema": None,
    "build": leaf(
        "builder", "dockerfilePath", "buildCommand", "watchPatterns", "nixpacksConfigPath"
    ),
    "deploy": leaf(
        "startCommand",
        "preDeployCommand",
        "numReplicas",
        "healthcheckPath",
        "healthcheckTimeout",
        "restartPolicyType",
        "restartPolicyMaxRetries",
        "overlapSeconds",
        "drainingSeconds",
        "sleepApplication",
        "cronSchedule",
        "region",
    ),
}
RAILWAY_FILES = {
    "web": ROOT / "railway.json",
    "worker": DEPLOY / "railway" / "worker.json",
    "beat": DEPLOY / "railway" / "beat.json",
}


@pytest.mark.parametrize("name", sorted(RAILWAY_FILES))
def test_railway_config_structure(name: str) -> None:
    config = load_json(RAILWAY_FILES[name])
    assert unknown_keys(config, RAILWAY_SPEC) == []
    assert config["$schema"] == "https://railway.com/railway.schema.json"
    assert config["build"]["builder"] == "DOCKERFILE"
    assert (ROOT / config["build"]["dockerfilePath"]).is_file()
    deploy = config["deploy"]
    assert deploy["restartPolicyType"] in {"ON_FAILURE", "ALWAYS", "NEVER"}
    assert deploy["sleepApplication"] is False, "workers and beat must never sleep"


def test_railway_contract() -> None:
    web = load_json(RAILWAY_FILES["web"])["deploy"]
    command = split_command(web["startCommand"])
    assert command[: len(WEB_GUNICORN)] == WEB_GUNICORN
    # Railway routes to $PORT (which the app reads) on all interfaces.
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert "--port" not in command
    assert [split_command(c) for c in web["preDeployCommand"]] == [MIGRATE]
    assert web["healthcheckPath"] == "/health/ready"
    assert web["drainingSeconds"] > GRACEFUL_TIMEOUT, "SIGKILL only after the drain"
    worker = load_json(RAILWAY_FILES["worker"])["deploy"]
    beat = load_json(RAILWAY_FILES["beat"])["deploy"]
    assert split_command(worker["startCommand"]) == WORKER
    assert split_command(beat["startCommand"]) == BEAT
    assert beat["numReplicas"] == 1, "exactly one scheduler"


def test_railway_check_can_fail() -> None:
    config = copy.deepcopy(load_json(RAILWAY_FILES["web"]))
    config["deploy"]["healthCheckPath"] = "/health/ready"
    assert unknown_keys(config, RAILWAY_SPEC) == ["/deploy/healthCheckPath"]


# --- Render -----------------------------------------------------------------------------

RENDER_ENV_VAR: dict[str, Any] = {
    "key": None,
    "value": None,
    "generateValue": None,
    "sync": None,
    "fromGroup": None,
    "fromDatabase": leaf("name", "property"),
    "fromService": leaf("type", "name", "property", "envVarKey"),
}
RENDER_SERVICE: dict[str, Any] = {
    **leaf(
        "type",
        "name",
        "runtime",
        "plan",
        "region",
        "dockerCommand",
        "dockerfilePath",
        "dockerContext",
        "buildCommand",
        "startCommand",
        "preDeployCommand",
        "healthCheckPath",
        "numInstances",
        "maxShutdownDelaySeconds",
        "domains",
        "autoDeploy",
        "branch",
        "repo",
        "rootDir",
        "schedule",
        "ipAllowList",
        "maxmemoryPolicy",
    ),
    "image": {"url": None, "creds": {"fromRegistryCreds": leaf("name")}},
    "scaling": leaf("minInstances", "maxInstances", "targetCPUPercent", "targetMemoryPercent"),
    "envVars": RENDER_ENV_VAR,
}
RENDER_SPEC: dict[str, Any] = {
    "services": RENDER_SERVICE,
    "databases": leaf(
        "name",
        "databaseName",
        "user",
        "plan",
        "region",
        "postgresMajorVersion",
        "ipAllowList",
        "diskSizeGB",
        "highAvailability",
        "readReplicas",
    ),
    "envVarGroups": {"name": None, "envVars": RENDER_ENV_VAR},
    "previews": None,
}


@pytest.fixture(scope="module")
def render() -> dict[str, Any]:
    blueprint: dict[str, Any] = load_yaml(ROOT / "render.yaml")
    return blueprint


def render_services(render: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {service["name"]: service for service in render["services"]}


def test_render_blueprint_structure(render: dict[str, Any]) -> None:
    assert unknown_keys(render, RENDER_SPEC) == []
    kinds = sorted(service["type"] for service in render["services"])
    assert kinds == ["cron", "keyvalue", "web", "worker", "worker"]
    (database,) = render["databases"]
    assert int(database["postgresMajorVersion"]) >= 15
    for service in render["services"]:
        if service["type"] == "keyvalue":
            assert service["ipAllowList"] == [], "private network only"
            assert service["maxmemoryPolicy"] != "allkeys-lru", "never evict queued jobs"
            continue
        assert service["runtime"] == "image"
        assert service["image"]["url"].startswith("ghcr.io/owner/slipway:")
        if service["type"] == "cron":
            assert CRON.match(service["schedule"]), service["schedule"]


def test_render_check_can_fail(render: dict[str, Any]) -> None:
    broken = copy.deepcopy(render)
    broken["services"][0]["healthcheckPath"] = "/health/ready"
    broken["databases"][0]["version"] = "16"
    assert unknown_keys(broken, RENDER_SPEC) == [
        "/services[0]/healthcheckPath",
        "/databases[0]/version",
    ]


def test_render_references_resolve(render: dict[str, Any]) -> None:
    services = render_services(render)
    databases = {database["name"] for database in render["databases"]}
    groups = {group["name"] for group in render["envVarGroups"]}
    for service in render["services"]:
        for var in service.get("envVars", []):
            if "fromGroup" in var:
                assert var["fromGroup"] in groups
            if "fromDatabase" in var:
                assert var["fromDatabase"]["name"] in databases
                assert var["fromDatabase"]["property"] == "connectionString"
            if "fromService" in var:
                target = services[var["fromService"]["name"]]
                assert target["type"] == var["fromService"]["type"]


def test_render_contract(render: dict[str, Any]) -> None:
    services = render_services(render)
    web = services["slipway"]
    command = split_command(web["dockerCommand"])
    assert command[: len(WEB_GUNICORN)] == WEB_GUNICORN
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert split_command(web["preDeployCommand"]) == MIGRATE
    assert web["healthCheckPath"] == "/health/ready"
    assert web["maxShutdownDelaySeconds"] > GRACEFUL_TIMEOUT
    assert split_command(services["slipway-worker"]["dockerCommand"]) == WORKER
    beat = services["slipway-beat"]
    assert split_command(beat["dockerCommand"]) == BEAT
    assert beat["numInstances"] == 1, "exactly one scheduler"
    probe = split_command(services["slipway-probe"]["dockerCommand"])
    assert probe[:2] == ["slipway", "probe"]
    assert probe[2].startswith("https://")


def _render_env(render: dict[str, Any], name: str) -> dict[str, str]:
    """A service's environment as Render resolves it at run time."""
    groups = {group["name"]: group["envVars"] for group in render["envVarGroups"]}
    resolved: dict[str, str] = {}
    variables = render_services(render)[name]["envVars"]
    for var in [v for item in variables for v in groups.get(item.get("fromGroup"), [item])]:
        if "fromGroup" in var:
            continue
        if var.get("generateValue"):
            resolved[var["key"]] = SECRET_VALUES["SECRET_KEY"]
        elif "fromDatabase" in var:
            resolved[var["key"]] = "postgresql://slipway:pw@dpg-abc123-a:5432/slipway"
        elif "fromService" in var:
            resolved[var["key"]] = "redis://red-abc123:6379"
        else:
            resolved[var["key"]] = str(var["value"])
    return resolved


@pytest.mark.parametrize("name", ["slipway", "slipway-worker", "slipway-beat"])
def test_render_settings(
    render: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _render_env(render, name)
    assert unknown_settings(set(env)) == set()
    settings = settings_from(monkeypatch, env)
    assert settings.production_problems() == []
    assert settings.database_url.startswith("postgresql+asyncpg://")


# --- Azure Container Apps ---------------------------------------------------------------

AZURE = DEPLOY / "azure"
AZURE_APPS = ("containerapp.yaml", "worker.yaml", "beat.yaml")


def _model_fields(model: type) -> dict[str, Any]:
    """A generated SDK model's REST field names and their annotations."""
    from azure.mgmt.appcontainers import models

    model()  # the SDK computes the field table on first instantiation
    hints = typing.get_type_hints(model, localns={**vars(models), "_models": models})
    table = model._attr_to_rest_field  # type: ignore[attr-defined]
    return {field._rest_name: hints[attr] for attr, field in table.items()}


def _sdk_model_base() -> type:
    from azure.mgmt.appcontainers._utils.model_base import Model

    return Model


def sdk_errors(value: Any, annotation: Any, path: str) -> list[str]:
    """Where `value` does not fit `annotation` (a type from the SDK's models)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        enums = [arg for arg in options if isinstance(arg, type) and issubclass(arg, enum.Enum)]
        if enums and isinstance(value, str):
            known = {member.value.lower() for e in enums for member in e}
            return [] if value.lower() in known else [f"{path}: {value!r} not in {sorted(known)}"]
        results = [sdk_errors(value, option, path) for option in options]
        return [] if any(not r for r in results) else min(results, key=len)
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        (item,) = typing.get_args(annotation)
        return [e for i, v in enumerate(value) for e in sdk_errors(v, item, f"{path}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping"]
        item = typing.get_args(annotation)[1]
        return [e for k, v in value.items() for e in sdk_errors(v, item, f"{path}/{k}")]
    if isinstance(annotation, type) and issubclass(annotation, _sdk_model_base()):
        if not isinstance(value, dict):
            return [f"{path}: expected an object ({annotation.__name__})"]
        fields = _model_fields(annotation)
        errors: list[str] = []
        for key, item in value.items():
            if key not in fields:
                errors.append(f"{path}/{key}: not a field of {annotation.__name__}")
            else:
                errors.extend(sdk_errors(item, fields[key], f"{path}/{key}"))
        return errors
    if annotation is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected a number"]
    if annotation in (str, int, bool):
        ok = isinstance(value, annotation) and not (annotation is int and isinstance(value, bool))
        return [] if ok else [f"{path}: expected {annotation.__name__}, got {value!r}"]
    return []  # Any and other open types


def azure_errors(document: dict[str, Any]) -> list[str]:
    from azure.mgmt.appcontainers import models

    model = models.Job if document.get("type") == "Microsoft.App/jobs" else models.ContainerApp
    return sdk_errors(document, model, "")


@pytest.fixture(scope="module")
def azure() -> dict[str, dict[str, Any]]:
    pytest.importorskip("azure.mgmt.appcontainers")
    return {path.name: load_yaml(path) for path in sorted(AZURE.glob("*.yaml"))}


def test_azure_files_match_the_sdk_models(azure: dict[str, dict[str, Any]]) -> None:
    assert set(azure) == {*AZURE_APPS, "migrate-job.yaml"}
    for name, document in azure.items():
        assert azure_errors(document) == [], name


def test_azure_check_can_fail(azure: dict[str, dict[str, Any]]) -> None:
    broken = copy.deepcopy(azure["containerapp.yaml"])
    template = broken["properties"]["template"]
    template["containers"][0]["probes"][0]["type"] = "Alive"
    template["containers"][0]["probes"][1]["httpGet"]["pth"] = "/health/live"
    template["scale"]["minReplicas"] = "one"
    errors = "\n".join(azure_errors(broken))
    assert "'Alive' not in" in errors
    assert "httpGet/pth: not a field" in errors
    assert "minReplicas: expected int" in errors


def _container(document: dict[str, Any]) -> dict[str, Any]:
    (container,) = document["properties"]["template"]["containers"]
    return dict(container)


def test_azure_web_app(azure: dict[str, dict[str, Any]]) -> None:
    app = azure["containerapp.yaml"]["properties"]
    container = _container(azure["containerapp.yaml"])
    assert container["command"] == WEB_UVICORN
    ingress = app["configuration"]["ingress"]
    env = env_list_to_dict(container["env"], "name", "value")
    assert ingress["targetPort"] == int(env["PORT"])
    assert ingress["allowInsecure"] is False
    probes = {probe["type"]: probe["httpGet"]["path"] for probe in container["probes"]}
    assert probes == {
        "Startup": "/health/live",
        "Liveness": "/health/live",
        "Readiness": "/health/ready",
    }
    template = app["template"]
    assert template["terminationGracePeriodSeconds"] > int(env["GRACEFUL_TIMEOUT"])
    scale = template["scale"]
    assert 1 <= scale["minReplicas"] <= scale["maxReplicas"]
    (rule,) = scale["rules"]
    assert int(rule["http"]["metadata"]["concurrentRequests"]) > 0


def test_azure_worker_beat_and_migration(azure: dict[str, dict[str, Any]]) -> None:
    assert _container(azure["worker.yaml"])["command"] == WORKER
    assert _container(azure["beat.yaml"])["command"] == BEAT
    beat_scale = azure["beat.yaml"]["properties"]["template"]["scale"]
    assert beat_scale["minReplicas"] == beat_scale["maxReplicas"] == 1, "exactly one scheduler"
    (queue_rule,) = azure["worker.yaml"]["properties"]["template"]["scale"]["rules"]
    assert queue_rule["custom"]["type"] == "redis"
    assert queue_rule["custom"]["metadata"]["listName"] == "slipway", "JOBS_QUEUE"
    job = azure["migrate-job.yaml"]["properties"]
    assert job["configuration"]["triggerType"] == "Manual"
    assert _container(azure["migrate-job.yaml"])["command"] == MIGRATE
    images = {_container(document)["image"] for document in azure.values()}
    assert len(images) == 1, "every component runs the one tested image"
    assert "ingress" not in azure["worker.yaml"]["properties"]["configuration"]


@pytest.mark.parametrize("name", [*AZURE_APPS, "migrate-job.yaml"])
def test_azure_secrets_and_settings(
    azure: dict[str, dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    configuration = azure[name]["properties"]["configuration"]
    secrets = {secret["name"]: secret for secret in configuration["secrets"]}
    for secret in secrets.values():
        assert "value" not in secret, "secrets come from Key Vault, never the file"
        assert secret["keyVaultUrl"].startswith("https://")
        assert secret["identity"] == "system"
    assert azure[name]["identity"]["type"] == "SystemAssigned"
    for registry in configuration.get("registries", []):
        assert registry["passwordSecretRef"] in secrets
    container = _container(azure[name])
    values: dict[str, str] = {}
    for item in container["env"]:
        if "secretRef" in item:
            assert item["secretRef"] in secrets, item
            values[item["name"]] = SECRET_VALUES[item["name"]]
        else:
            values[item["name"]] = str(item["value"])
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL"} <= values.keys()
    assert unknown_settings(set(values)) == set()
    assert settings_from(monkeypatch, values).production_problems() == []


# --- the docs ----------------------------------------------------------------------------

PAGES = {
    "railway": "railway up",
    "render": "render.yaml",
    "azure-container-apps": "az containerapp create",
    "fastapi-cloud": "fastapi deploy",
    "caddy": "caddy run",
    "traefik": "compose.traefik.yml",
}


@pytest.mark.parametrize("page", sorted(PAGES))
def test_each_page_has_the_usual_sections(page: str) -> None:
    text = (DOCS / f"{page}.md").read_text(encoding="utf-8")
    positions = [text.find(f"\n{section}\n") for section in SECTIONS]
    assert -1 not in positions, f"{page}.md lacks a section"
    assert positions == sorted(positions), "sections in the usual order"
    assert "```sh" in text
    assert PAGES[page] in text


def test_index_lists_the_new_pages() -> None:
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    for page in PAGES:
        assert f"]({page}.md)" in index, page


def test_fastapi_cloud_entrypoint_is_documented() -> None:
    text = (DOCS / "fastapi-cloud.md").read_text(encoding="utf-8")
    assert "[tool.fastapi]" in text
    assert 'entrypoint = "slipway.asgi:app"' in text
