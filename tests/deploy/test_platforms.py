"""Platforms without a local validator: Heroku (Procfile, .python-version, app.json),
DigitalOcean App Platform (.do/app.yaml against DigitalOcean's own JSON schema, closed so
unknown keys fail) and Google Cloud Run (Knative YAML: its containers validated as
Kubernetes containers with kubernetes-validate, plus Cloud Run's own limits). Each must
run the contract's commands and give the app settings its production guard accepts.
"""

from __future__ import annotations

import copy
import re
import tomllib
from typing import Any

import pytest

from tests.deploy._tools import (
    BEAT,
    DEPLOY,
    GRACEFUL_TIMEOUT,
    MIGRATE,
    ROOT,
    SCHEMAS,
    SECRET_VALUES,
    WEB_GUNICORN,
    WEB_UVICORN,
    WORKER,
    env_list_to_dict,
    load_json,
    load_yaml,
    schema_errors,
    settings_from,
    split_command,
    unknown_settings,
)

pytestmark = pytest.mark.deploy

KUBERNETES_VERSION = "1.32.0"


# --- Heroku ------------------------------------------------------------------------------


def procfile() -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in (ROOT / "Procfile").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            assert re.fullmatch(r"[a-z][a-z0-9_-]*", name), f"bad process type {name!r}"
            assert name not in entries, f"{name} twice"
            entries[name] = command.strip()
    return entries


def test_procfile_processes() -> None:
    processes = procfile()
    assert set(processes) == {"web", "release", "worker", "beat"}
    web = split_command(processes["web"])
    assert web[: len(WEB_GUNICORN)] == WEB_GUNICORN
    # Heroku routes to $PORT on all interfaces.
    assert web[web.index("--port") + 1] == "$PORT"
    assert web[web.index("--host") + 1] == "0.0.0.0"
    assert split_command(processes["release"]) == MIGRATE, "migrations run in the release phase"
    assert split_command(processes["worker"]) == WORKER
    assert split_command(processes["beat"]) == BEAT


def test_python_version_is_pinned_and_supported() -> None:
    pinned = (ROOT / ".python-version").read_text(encoding="utf-8").strip()
    assert re.fullmatch(r"3\.\d+", pinned), "major.minor: the platform picks the latest patch"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "requires-python"
    ]
    minimum = re.fullmatch(r">=\s*3\.(\d+)", requires)
    assert minimum, requires
    assert int(pinned.split(".")[1]) >= int(minimum.group(1))
    dockerfile = ROOT / "Dockerfile"
    if dockerfile.is_file():
        match = re.search(r"ARG PYTHON_VERSION=(\S+)", dockerfile.read_text(encoding="utf-8"))
        assert match, "Dockerfile: ARG PYTHON_VERSION"
        assert match.group(1) == pinned, "the image and the platforms run one Python"


def test_app_json(monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = load_json(ROOT / "app.json")
    assert manifest["name"]
    assert manifest["description"]
    assert {"url": "heroku/python"} in manifest["buildpacks"]
    plans = {addon["plan"].split(":")[0] for addon in manifest["addons"]}
    assert plans == {"heroku-postgresql", "heroku-redis"}
    assert set(manifest["formation"]) == set(procfile()) - {"release"}
    assert manifest["formation"]["beat"]["quantity"] == 1, "exactly one scheduler"
    env = manifest["env"]
    assert env["SECRET_KEY"]["generator"] == "secret"
    assert unknown_settings(set(env)) == set()
    # Heroku SIGKILLs a dyno 30 s after SIGTERM.
    assert int(env["GRACEFUL_TIMEOUT"]["value"]) < 30

    # What a new app ends up with: fixed values, a generated secret (64 hex characters),
    # the add-ons' URLs (Heroku's `postgres://` scheme) and the required value.
    values = {name: spec["value"] for name, spec in env.items() if "value" in spec}
    values |= {
        "SECRET_KEY": "0123456789abcdef" * 4,
        "DATABASE_URL": "postgres://user:password@ec2-1-2-3-4.compute-1.amazonaws.com:5432/d1",
        "REDIS_URL": "rediss://:password@ec2-5-6-7-8.compute-1.amazonaws.com:6380",
        "ALLOWED_HOSTS": "my-slipway.herokuapp.com",
    }
    settings = settings_from(monkeypatch, values)
    assert settings.production_problems() == []
    assert settings.database_url.startswith("postgresql+asyncpg://"), "postgres:// is rewritten"


# --- DigitalOcean App Platform -------------------------------------------------------------


def closed(schema: Any) -> Any:
    """The schema with every object closed: DigitalOcean's published schema allows any
    extra key, so a misspelt one would pass unnoticed."""
    if isinstance(schema, dict):
        schema = {key: closed(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    return schema


@pytest.fixture(scope="module")
def do_schema() -> dict[str, Any]:
    spec: dict[str, Any] = closed(
        load_json(SCHEMAS / "digitalocean-app-create.json")["properties"]["spec"]
    )
    return spec


@pytest.fixture(scope="module")
def do_app() -> dict[str, Any]:
    spec: dict[str, Any] = load_yaml(ROOT / ".do" / "app.yaml")
    return spec


def test_do_app_spec_matches_the_schema(do_app: dict[str, Any], do_schema: dict[str, Any]) -> None:
    assert schema_errors(do_app, do_schema) == []


def test_do_schema_check_can_fail(do_app: dict[str, Any], do_schema: dict[str, Any]) -> None:
    broken = copy.deepcopy(do_app)
    broken["services"][0]["health_check"]["http_pth"] = "/health"
    broken["services"][0]["instance_count"] = "two"
    errors = "\n".join(schema_errors(broken, do_schema))
    assert "http_pth" in errors
    assert "'two' is not of type 'integer'" in errors


def test_do_components(do_app: dict[str, Any]) -> None:
    (web,) = do_app["services"]
    assert split_command(web["run_command"]) == WEB_GUNICORN
    web_env = env_list_to_dict(web["envs"], "key", "value")
    assert int(web_env["PORT"]) == web["http_port"], "the app listens where App Platform routes"
    assert web["health_check"]["http_path"] == "/health/ready"
    assert web["liveness_health_check"]["http_path"] == "/health/live"
    assert web["termination"]["grace_period_seconds"] > int(web_env["GRACEFUL_TIMEOUT"])
    workers = {worker["name"]: worker for worker in do_app["workers"]}
    assert split_command(workers["worker"]["run_command"]) == WORKER
    assert split_command(workers["beat"]["run_command"]) == BEAT
    assert workers["beat"]["instance_count"] == 1
    (job,) = do_app["jobs"]
    assert job["kind"] == "PRE_DEPLOY"
    assert split_command(job["run_command"]) == MIGRATE
    engines = {database["name"]: database["engine"] for database in do_app["databases"]}
    assert engines["db"] == "PG"
    components = [*do_app["services"], *do_app["workers"], *do_app["jobs"]]
    images = {(c["image"]["registry_type"], c["image"]["repository"]) for c in components}
    assert images == {("GHCR", "slipway")}, "every component runs the one tested image"


def test_do_settings(do_app: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    app_env = env_list_to_dict(do_app["envs"], "key", "value")
    (web,) = do_app["services"]
    env = {**app_env, **env_list_to_dict(web["envs"], "key", "value")}
    assert unknown_settings(set(env)) == set()
    database_url = env["DATABASE_URL"]
    # Bindable variables must name a database component.
    for component in re.findall(r"\$\{(\w+)\.\w+\}", database_url + env["REDIS_URL"]):
        assert component in {database["name"] for database in do_app["databases"]}
    assert "sslmode=" not in database_url, "asyncpg takes ssl=, not libpq's sslmode="
    # As App Platform resolves them at run time.
    resolved = {
        **env,
        "SECRET_KEY": SECRET_VALUES["SECRET_KEY"],
        "DATABASE_URL": re.sub(
            r"\$\{db\.(\w+)\}",
            lambda m: {
                "USERNAME": "doadmin",
                "PASSWORD": "pw",
                "HOSTNAME": "db-do-user-1.db.ondigitalocean.com",
                "PORT": "25060",
                "DATABASE": "slipway",
            }[m.group(1)],
            database_url,
        ),
        "REDIS_URL": "rediss://default:pw@cache-do-user-1.db.ondigitalocean.com:25061",
        "ALLOWED_HOSTS": env["ALLOWED_HOSTS"].replace(
            "${APP_DOMAIN}", "slipway-abc12.ondigitalocean.app"
        ),
    }
    settings = settings_from(monkeypatch, resolved)
    assert settings.production_problems() == []
    assert settings.database_url.endswith("?ssl=require")


# --- Google Cloud Run ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cloud_run() -> dict[str, Any]:
    service: dict[str, Any] = load_yaml(DEPLOY / "cloudrun" / "service.yaml")
    return service


@pytest.fixture(scope="module")
def cloud_run_job() -> dict[str, Any]:
    job: dict[str, Any] = load_yaml(DEPLOY / "cloudrun" / "migrate-job.yaml")
    return job


def job_container(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = job["spec"]["template"]["spec"]["template"]["spec"]["containers"]
    return dict(container)


def service_container(service: dict[str, Any]) -> dict[str, Any]:
    (container,) = service["spec"]["template"]["spec"]["containers"]
    return dict(container)


def validate_container(container: dict[str, Any]) -> None:
    """A Knative container is a subset of a Kubernetes one: validate it as a Pod's."""
    import kubernetes_validate

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "cloud-run"},
        "spec": {"containers": [container]},
    }
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_cloud_run_containers_are_valid(
    cloud_run: dict[str, Any], cloud_run_job: dict[str, Any]
) -> None:
    validate_container(service_container(cloud_run))
    validate_container(job_container(cloud_run_job))


def test_cloud_run_container_check_can_fail(cloud_run: dict[str, Any]) -> None:
    import kubernetes_validate.utils

    container = service_container(cloud_run)
    container["livenessProbe"]["httpGet"]["pth"] = "/health/live"
    with pytest.raises(kubernetes_validate.utils.ValidationError, match="pth"):
        validate_container(container)


def test_cloud_run_service_shape(cloud_run: dict[str, Any]) -> None:
    assert cloud_run["apiVersion"] == "serving.knative.dev/v1"
    assert cloud_run["kind"] == "Service"
    assert re.fullmatch(r"[a-z]([-a-z0-9]{0,47}[a-z0-9])?", cloud_run["metadata"]["name"])
    template = cloud_run["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    low = int(annotations["autoscaling.knative.dev/minScale"])
    high = int(annotations["autoscaling.knative.dev/maxScale"])
    assert 0 <= low <= high
    spec = template["spec"]
    assert 1 <= spec["containerConcurrency"] <= 1000
    assert 1 <= spec["timeoutSeconds"] <= 3600
    assert sum(route["percent"] for route in cloud_run["spec"]["traffic"]) == 100


def test_cloud_run_contract(cloud_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    container = service_container(cloud_run)
    assert container["args"] == WEB_UVICORN
    (port,) = container["ports"]
    assert port["name"] in {"http1", "h2c"}
    env = {item["name"]: item for item in container["env"]}
    # Cloud Run sets PORT itself and rejects a service that sets it.
    assert "PORT" not in env
    # SIGKILL follows SIGTERM after 10 s on Cloud Run: the drain must be shorter.
    assert int(env["GRACEFUL_TIMEOUT"]["value"]) < 10 < GRACEFUL_TIMEOUT
    # Google's front end keeps upstream connections for up to 600 s.
    assert int(env["KEEPALIVE_TIMEOUT"]["value"]) > 600
    for name in ("SECRET_KEY", "DATABASE_URL"):
        assert "secretKeyRef" in env[name]["valueFrom"], f"{name} from Secret Manager"
    assert container["startupProbe"]["httpGet"]["path"] == "/health/live"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert unknown_settings(set(env)) == set()
    values = {name: item.get("value") for name, item in env.items() if "value" in item}
    values |= {name: SECRET_VALUES[name] for name, item in env.items() if "valueFrom" in item}
    values["PORT"] = str(port["containerPort"])
    settings = settings_from(monkeypatch, values)
    assert settings.production_problems() == []
    assert settings.graceful_timeout < 10


def test_cloud_run_migration_job(cloud_run: dict[str, Any], cloud_run_job: dict[str, Any]) -> None:
    assert cloud_run_job["apiVersion"] == "run.googleapis.com/v1"
    assert cloud_run_job["kind"] == "Job"
    container = job_container(cloud_run_job)
    assert container["args"] == MIGRATE
    assert container["image"] == service_container(cloud_run)["image"], "same image as the service"
    service_sql = cloud_run["spec"]["template"]["metadata"]["annotations"][
        "run.googleapis.com/cloudsql-instances"
    ]
    job_sql = cloud_run_job["spec"]["template"]["metadata"]["annotations"][
        "run.googleapis.com/cloudsql-instances"
    ]
    assert job_sql == service_sql, "the job migrates the database the service uses"


def test_docs_give_the_deploy_commands() -> None:
    text = (ROOT / "docs" / "deploy" / "cloud-run.md").read_text(encoding="utf-8")
    assert "gcloud run services replace deploy/cloudrun/service.yaml" in text
    assert "gcloud run jobs execute slipway-migrate" in text


# --- the deployment docs ---------------------------------------------------------------------

DOCS = ROOT / "docs" / "deploy"
TARGETS = (
    "docker",
    "compose",
    "kubernetes",
    "ecs",
    "lambda",
    "ec2",
    "heroku",
    "digitalocean",
    "cloud-run",
    "vm-systemd",
)
SECTIONS = ("## Prerequisites", "## Deploy", "## Migrations", "## Secrets", "## Roll back")


@pytest.mark.parametrize("target", TARGETS)
def test_each_target_has_its_page(target: str) -> None:
    text = (DOCS / f"{target}.md").read_text(encoding="utf-8")
    positions = [text.find(f"\n{section}\n") for section in SECTIONS]
    assert -1 not in positions, (
        f"{target}.md lacks {[s for s, p in zip(SECTIONS, positions, strict=True) if p < 0]}"
    )
    assert positions == sorted(positions), "sections in the usual order"
    assert "```sh" in text, "exact commands"


def test_index_links_every_page_and_links_resolve() -> None:
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    for target in TARGETS:
        assert f"]({target}.md)" in index, target
    for page in DOCS.glob("*.md"):
        for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" not in link:
                assert (page.parent / link).exists(), f"{page.name}: broken link {link}"
