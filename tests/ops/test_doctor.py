"""`slipway doctor`: a valid production configuration passes every check, and each
misconfiguration, injected one at a time, flags exactly its own check.

The settings come from the environment as in a deployment (monkeypatched variables, no
.env, no secrets directory); the migration check reads a real PostgreSQL database.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from slipway.ops.checks import Report, Status
from slipway.ops.doctor import (
    REPLICA_MARKERS,
    DoctorContext,
    load_audited_settings,
    registry,
    run_doctor,
)
from slipway.ops.manifests import (
    k8s_shutdown_budget,
    nginx_upstreams,
    parse_nginx_time,
)
from slipway.platform.settings import Settings
from tests.integration.conftest import run_slipway, slipway_env
from tests.support.ports import free_port
from tests.support.services import PostgresService

REPO = Path(__file__).resolve().parents[2]
NGINX_CONF = REPO / "deploy" / "nginx" / "nginx.conf"
K8S_DEPLOYMENT = REPO / "deploy" / "k8s" / "base" / "app-deployment.yaml"
SECRET = secrets.token_urlsafe(48)
UID = 10001
CPUS = 2


@dataclass(frozen=True)
class Databases:
    at_head: str
    empty: str
    unreachable: str


@pytest.fixture(scope="module")
def databases(postgres_server: PostgresService, pg_template: str) -> Iterator[Databases]:
    """A database migrated to head, an empty one, and an address nothing listens on."""
    suffix = uuid.uuid4().hex[:10]
    head, empty = f"doctor_head_{suffix}", f"doctor_empty_{suffix}"
    postgres_server.create_database(head, template=pg_template)
    postgres_server.create_database(empty)
    try:
        yield Databases(
            at_head=postgres_server.url(head),
            empty=postgres_server.url(empty),
            unreachable=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing",
        )
    finally:
        postgres_server.drop_database(head)
        postgres_server.drop_database(empty)


def production_env(database_url: str) -> dict[str, str]:
    """A production configuration that should pass every check."""
    return {
        "ENVIRONMENT": "production",
        "SECRET_KEY": SECRET,
        "DATABASE_URL": database_url,
        "REDIS_URL": "redis://cache.internal:6379/0",
        "CELERY_BROKER_URL": "redis://broker.internal:6379/1",
        "ALLOWED_HOSTS": "api.example.com,localhost",
        "CORS_ORIGINS": "https://app.example.com",
        "PUBLIC_BASE_URL": "https://api.example.com",
        "SENTRY_DSN": "https://public@errors.example.com/1",
        "SMTP_HOST": "smtp.example.com",
        "WORKERS": "2",
        "DB_POOL_SIZE": "5",
        "DB_MAX_OVERFLOW": "5",
    }


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Nothing leaks in from the machine: settings, replica markers, .env, secrets."""
    names = {name.upper() for name in Settings.model_fields} | {"WEB_CONCURRENCY"}
    names |= set(REPLICA_MARKERS)
    for key in list(os.environ):
        if key.upper() in names:
            monkeypatch.delenv(key)
    monkeypatch.setenv("SECRETS_DIR", str(tmp_path / "no-secrets-here"))
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return workdir


@pytest.fixture
def limited_cgroup(tmp_path: Path) -> Path:
    """A cgroup v2 directory with a 2-CPU quota and a 512 MiB memory limit."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cpu.max").write_text("200000 100000\n")
    (root / "memory.max").write_text(f"{512 * 1024 * 1024}\n")
    return root


@dataclass
class Doctor:
    monkeypatch: pytest.MonkeyPatch
    workdir: Path
    cgroup: Path
    databases: Databases
    context: dict[str, Any] = field(default_factory=dict)

    def run(self, env: dict[str, str | None]) -> Report:
        for name, value in env.items():
            if value is None:
                self.monkeypatch.delenv(name, raising=False)
            else:
                self.monkeypatch.setenv(name, value)
        settings, problems = load_audited_settings()
        values: dict[str, Any] = {
            "settings": settings,
            "settings_problems": problems,
            "environ": dict(os.environ),
            "cwd": self.workdir,
            "cpus": CPUS,
            "cgroup_root": self.cgroup,
            "euid": UID,
            "nginx_conf": NGINX_CONF,
            "k8s_deployment": K8S_DEPLOYMENT,
        }
        values.update(self.context)
        return run_doctor(DoctorContext(**values))


@pytest.fixture
def doctor(
    monkeypatch: pytest.MonkeyPatch,
    clean_environment: Path,
    limited_cgroup: Path,
    databases: Databases,
) -> Doctor:
    return Doctor(monkeypatch, clean_environment, limited_cgroup, databases)


def not_passing(report: Report) -> dict[str, str]:
    return {r.id: r.status.value for r in report.results if r.status is not Status.PASS}


def test_valid_production_configuration_passes_every_check(doctor: Doctor) -> None:
    report = doctor.run(production_env(doctor.databases.at_head))

    assert not_passing(report) == {}, report.to_json()
    assert [r.id for r in report.results] == registry.ids
    assert report.exit_code == 0
    assert report.by_id()["db.migrations"].detail.startswith("at head")


# --- one misconfiguration at a time ----------------------------------------------------------

Setup = Callable[[Doctor], dict[str, str | None]]


def env(**values: str | None) -> Setup:
    return lambda _doctor: values


def database(kind: str, suffix: str = "") -> Setup:
    return lambda doctor: {"DATABASE_URL": getattr(doctor.databases, kind) + suffix}


def context(**values: Any) -> Setup:
    def apply(doctor: Doctor) -> dict[str, str | None]:
        doctor.context.update(values)
        return {}

    return apply


def secret_in_dotenv(doctor: Doctor) -> dict[str, str | None]:
    (doctor.workdir / ".env").write_text(f"SECRET_KEY={SECRET}\n")
    return {"SECRET_KEY": None}


def no_cgroup_limits(doctor: Doctor) -> dict[str, str | None]:
    empty = doctor.cgroup.parent / "unlimited"
    empty.mkdir()
    (empty / "cpu.max").write_text("max 100000\n")
    (empty / "memory.max").write_text("max\n")
    doctor.context["cgroup_root"] = empty
    return {}


def sqlite_by_opt_in(doctor: Doctor) -> dict[str, str | None]:
    template: Path = doctor.context.pop("_sqlite_template")
    target = doctor.workdir / "slipway.db"
    shutil.copyfile(template, target)
    return {"DATABASE_URL": f"sqlite+aiosqlite:///{target}", "ALLOW_SQLITE_IN_PRODUCTION": "true"}


#: (check id, expected status, injected misconfiguration). Every check has at least one row.
MISCONFIGURATIONS: list[tuple[str, str, Setup]] = [
    ("settings.valid", "fail", env(PORT="not-a-port")),
    ("env.production", "warn", env(ENVIRONMENT="staging")),
    ("app.debug", "fail", env(DEBUG="true")),
    ("app.debug", "fail", env(PROFILER_ENABLED="true")),
    ("app.debug", "fail", env(DB_ECHO="true")),
    ("api.docs", "fail", env(DOCS_ENABLED="true")),
    ("api.docs", "warn", env(DOCS_ENABLED="true", ALLOW_DOCS_IN_PRODUCTION="true")),
    ("secret.key", "fail", env(SECRET_KEY=None)),
    ("secret.key", "fail", env(SECRET_KEY="change-me-in-production")),
    ("secret.key", "fail", env(SECRET_KEY="s3cr3t-but-short")),
    ("secret.key", "fail", env(SECRET_KEY="ab" * 32)),
    ("secret.key", "fail", env(SECRET_KEY="your-secret-key-here-" + secrets.token_hex(16))),
    ("secret.key", "warn", secret_in_dotenv),
    ("auth.tokens", "fail", env(ACCESS_TOKEN_EXPIRE_MINUTES="1440")),
    ("auth.tokens", "fail", env(REFRESH_COOKIE_SECURE="false")),
    ("auth.tokens", "fail", env(JWT_ALGORITHM="RS256")),
    ("http.cors", "fail", env(CORS_ORIGINS="*")),
    ("http.cors", "fail", env(CORS_ORIGINS="https://app.example.com/path")),
    ("http.cors", "warn", env(CORS_ORIGINS="http://app.example.com")),
    ("http.allowed_hosts", "fail", env(ALLOWED_HOSTS="*")),
    ("http.allowed_hosts", "warn", env(ALLOWED_HOSTS=None)),
    ("http.allowed_hosts", "warn", env(ALLOWED_HOSTS="api.example.com,testserver")),
    ("http.tls", "fail", env(HSTS_SECONDS="0")),
    ("http.tls", "warn", env(HSTS_SECONDS="3600")),
    ("http.proxy_trust", "warn", env(FORWARDED_ALLOW_IPS="*")),
    ("http.body_limit", "warn", env(MAX_BODY_SIZE=str(100 * 1024 * 1024))),
    ("http.public_url", "fail", env(PUBLIC_BASE_URL="http://api.example.com")),
    ("http.public_url", "fail", env(PUBLIC_BASE_URL=None)),
    ("db.backend", "warn", sqlite_by_opt_in),
    ("db.pool", "fail", env(DB_POOL_SIZE="60")),
    ("db.pool", "warn", env(DB_POOL_RECYCLE="-1")),
    ("db.pool", "warn", env(DB_STATEMENT_TIMEOUT_MS="0")),
    ("db.tls", "warn", database("at_head", "?ssl=disable")),
    ("db.migrations", "fail", database("empty")),
    ("db.migrations", "fail", database("unreachable")),
    ("logs.format", "fail", env(LOG_FORMAT="console")),
    ("logs.format", "warn", env(LOG_LEVEL="DEBUG")),
    ("errors.tracker", "warn", env(SENTRY_DSN=None)),
    ("metrics.exposure", "fail", env(METRICS_EXPOSURE="public")),
    ("metrics.exposure", "fail", env(METRICS_ALLOW_IPS="10.0.0.0/8,0.0.0.0/0")),
    ("metrics.exposure", "warn", env(METRICS_ENABLED="false")),
    ("ratelimit.enabled", "fail", env(RATE_LIMIT_ENABLED="false")),
    ("ratelimit.enabled", "warn", env(RATE_LIMIT_POLICIES='{"login": "100/minute"}')),
    ("state.shared", "fail", env(REDIS_URL=None)),
    ("jobs.broker", "fail", env(JOBS_BACKEND="embedded")),
    (
        "jobs.broker",
        "warn",
        env(JOBS_BACKEND="embedded", ALLOW_EMBEDDED_JOBS_IN_PRODUCTION="true"),
    ),
    ("jobs.timeouts", "fail", env(JOBS_VISIBILITY_TIMEOUT="100")),
    ("mail.transport", "warn", env(SMTP_HOST=None)),
    ("mail.transport", "warn", env(SMTP_STARTTLS="false")),
    ("server.workers", "fail", env(WORKERS="5")),
    ("server.workers", "fail", env(WEB_CONCURRENCY="8")),
    ("server.workers", "warn", env(WORKERS="3")),
    ("server.keepalive", "fail", env(KEEPALIVE_TIMEOUT="60")),
    ("server.graceful_shutdown", "fail", env(GRACEFUL_TIMEOUT="35")),
    ("runtime.user", "warn", context(euid=0)),
    ("runtime.limits", "warn", no_cgroup_limits),
]


ROWS = [
    pytest.param(*row, id=f"{row[0]}-{row[1]}-{index}")
    for index, row in enumerate(MISCONFIGURATIONS)
]


@pytest.mark.parametrize(("check_id", "status", "inject"), ROWS)
def test_each_misconfiguration_flags_exactly_its_check(
    doctor: Doctor,
    request: pytest.FixtureRequest,
    check_id: str,
    status: str,
    inject: Setup,
) -> None:
    if inject is sqlite_by_opt_in:
        doctor.context["_sqlite_template"] = request.getfixturevalue("sqlite_template")
    values: dict[str, str | None] = production_env(doctor.databases.at_head)
    values.update(inject(doctor))

    report = doctor.run(values)

    assert not_passing(report) == {check_id: status}, report.to_json()
    assert report.exit_code == (1 if status == "fail" else 0)
    flagged = report.by_id()[check_id]
    assert flagged.detail
    assert flagged.fix


def test_the_table_covers_every_check() -> None:
    covered = {row[0] for row in MISCONFIGURATIONS}

    assert covered == set(registry.ids)


def test_unparseable_settings_report_only_that(doctor: Doctor) -> None:
    report = doctor.run({**production_env(doctor.databases.at_head), "WORKERS": "lots"})

    assert [(r.id, r.status.value) for r in report.results] == [("settings.valid", "fail")]
    assert "WORKERS" in report.results[0].detail


def test_refused_production_settings_are_still_audited(doctor: Doctor) -> None:
    """Settings() refuses DEBUG in production; doctor reports it as one check among all."""
    values = {**production_env(doctor.databases.at_head), "DEBUG": "true"}
    for name, value in values.items():
        doctor.monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match="DEBUG is on"):
        Settings()

    report = doctor.run(values)

    assert len(report.results) == len(registry.ids)
    assert not_passing(report) == {"app.debug": "fail"}


def test_secret_from_the_secrets_directory_passes(doctor: Doctor, tmp_path: Path) -> None:
    secrets_dir = tmp_path / "run-secrets"
    secrets_dir.mkdir()
    (secrets_dir / "secret_key").write_text(SECRET)

    report = doctor.run(
        {
            **production_env(doctor.databases.at_head),
            "SECRET_KEY": None,
            "SECRETS_DIR": str(secrets_dir),
        }
    )

    secret = report.by_id()["secret.key"]
    assert secret.status is Status.PASS
    assert "secrets directory" in secret.detail


def test_replicas_need_shared_state_even_with_one_worker(doctor: Doctor) -> None:
    report = doctor.run(
        {
            **production_env(doctor.databases.at_head),
            "WORKERS": "1",
            "REDIS_URL": None,
            "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        }
    )

    shared = report.by_id()["state.shared"]
    assert shared.status is Status.FAIL
    assert "Kubernetes" in shared.detail


def test_offline_skips_the_database(doctor: Doctor) -> None:
    doctor.context["offline"] = True

    report = doctor.run(production_env(doctor.databases.unreachable))

    assert not_passing(report) == {"db.migrations": "warn"}


# --- deployment files ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("60s", 60), ("60", 60), ("1m", 60), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600)],
)
def test_nginx_time_units(text: str, seconds: float) -> None:
    assert parse_nginx_time(text) == seconds


def test_repository_nginx_upstream_idle_timeout() -> None:
    upstreams = nginx_upstreams(NGINX_CONF)

    assert [(u.name, u.keepalive, u.idle_timeout) for u in upstreams] == [
        ("slipway_app", True, 60.0)
    ]


def test_upstream_without_keepalive_and_default_timeout(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        "http {\n  # upstream commented { keepalive_timeout 5s; }\n"
        "  upstream a { server 10.0.0.1:8000; }\n"
        "  upstream b { server 10.0.0.2:8000; keepalive 8; }\n}\n"
    )

    assert [(u.name, u.keepalive, u.idle_timeout) for u in nginx_upstreams(conf)] == [
        ("a", False, 60.0),
        ("b", True, 60.0),
    ]


def test_repository_kubernetes_shutdown_budget() -> None:
    budget = k8s_shutdown_budget(K8S_DEPLOYMENT)

    assert budget is not None
    assert (budget.grace_seconds, budget.prestop_seconds) == (45.0, 10.0)


def test_exec_prestop_and_default_grace(tmp_path: Path) -> None:
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(
        "kind: ConfigMap\n---\nkind: Deployment\nmetadata: {name: web}\nspec:\n"
        "  template:\n    spec:\n      containers:\n"
        "        - name: app\n          args: [slipway, serve]\n"
        "          lifecycle:\n            preStop:\n"
        '              exec: {command: ["/bin/sh", "-c", "sleep 15"]}\n'
    )

    budget = k8s_shutdown_budget(manifest)

    assert budget is not None
    assert (budget.grace_seconds, budget.prestop_seconds) == (30.0, 15.0)


def test_graceful_timeout_against_a_tighter_manifest(doctor: Doctor, tmp_path: Path) -> None:
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(
        K8S_DEPLOYMENT.read_text().replace(
            "terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds: 25"
        )
    )
    doctor.context["k8s_deployment"] = manifest

    report = doctor.run(production_env(doctor.databases.at_head))

    assert not_passing(report) == {"server.graceful_shutdown": "fail"}
    assert "grace 25s" in report.by_id()["server.graceful_shutdown"].detail


# --- the command ---------------------------------------------------------------------------


def _cli_env(databases: Databases, **extra: str) -> dict[str, str]:
    return slipway_env(**{**production_env(databases.at_head), **extra})


@pytest.mark.integration
def test_cli_json_passes_a_valid_configuration(databases: Databases, tmp_path: Path) -> None:
    result = run_slipway(
        [
            "doctor",
            "--format",
            "json",
            "--nginx-conf",
            str(NGINX_CONF),
            "--k8s-deployment",
            str(K8S_DEPLOYMENT),
        ],
        cwd=tmp_path,
        env=_cli_env(databases, WORKERS="1"),
    )

    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    statuses = {check["id"]: check["status"] for check in report["checks"]}
    assert set(statuses) == set(registry.ids)
    # Only what depends on the machine running the test may differ (root, no cgroup limit).
    machine = {"runtime.user", "runtime.limits"}
    assert {k: v for k, v in statuses.items() if k not in machine} == dict.fromkeys(
        set(registry.ids) - machine, "pass"
    )
    assert report["summary"]["fail"] == 0


@pytest.mark.integration
def test_cli_table_exits_non_zero_on_a_failure(databases: Databases, tmp_path: Path) -> None:
    result = run_slipway(
        ["doctor"], cwd=tmp_path, env=_cli_env(databases, WORKERS="1", DEBUG="true")
    )

    assert result.returncode == 1, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if "app.debug" in line)
    assert "FAIL" in line
    assert "fix: Set DEBUG=false" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
