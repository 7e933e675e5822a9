"""Property-based API fuzzing with schemathesis, every default check on.

The suite runs over the app's OpenAPI schema twice:
- in-process against the ASGI app (PostgreSQL, Redis), and
- over the network against `slipway serve` (production settings) behind the repository's
  Nginx with TLS.

Every operation is fuzzed as a customer and as staff, so authorised paths are exercised, not
only their 401s; a stateful run then chains operations through the links schemathesis infers
from the schema (create a product, read it back, restock it, order it, change the order...).

Reproducible and bounded: Hypothesis is derandomised (the seed derives from each test's name,
so every CI run draws the same cases), with no example database, a fixed number of examples
per operation, and about two minutes on two cores. A failure is fixed in the app or its
schema, never by turning a check off; `test_enough_cases_were_generated` proves the run
reached its 1000 cases.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.python import asgi as schemathesis_asgi

from slipway.app import create_app
from tests.conftest import make_settings
from tests.deploy.nginx_support import make_self_signed
from tests.integration.conftest import slipway_env, start_server
from tests.support.ports import LOOPBACK
from tests.support.services import PostgresService, RedisService

PASSWORD = "fuzzing is believing 42"
#: Generated examples per operation and role, in-process and through Nginx. With the
#: coverage phase's own cases this gives well over 1000 cases per run.
INPROCESS_EXAMPLES = 4
NGINX_EXAMPLES = 6
STATEFUL_EXAMPLES = 15
STATEFUL_STEPS = 8
MIN_CASES = 1000
#: Nginx allows 20 requests/s per client with a burst of 40 (deploy/nginx/nginx.conf): stay
#: under it so the proxied cases reach the app instead of all being 429s.
NGINX_PACE_SECONDS = 0.05
#: Capacity, not a bypass: the limiter stays on, but a fuzzer sending thousands of requests
#: from one address would otherwise see little but 429s (the limits have their own tests:
#: tests/platform/test_ratelimit.py, tests/owasp/test_api4_*, tests/owasp/test_api6_*).
FUZZ_LIMITS: dict[str, Any] = {
    "rate_limit_default": "100000/minute",
    "rate_limit_policies": dict.fromkeys(
        ("login", "register", "password_reset", "search", "orders"), "100000/minute"
    ),
}
#: Operations after which the caller's session (or account) may be gone.
SESSION_ENDING = {
    ("POST", "/api/v1/auth/logout"),
    ("POST", "/api/v1/auth/logout-all"),
    ("DELETE", "/api/v1/users/me"),
    ("POST", "/api/v1/users/me/password"),
}
CASES: Counter[str] = Counter()

FUZZ_SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    # Registration and login hash passwords with argon2id (tens of ms each) on purpose.
    suppress_health_check=[HealthCheck.too_slow],
)

#: Business rules a JSON Schema cannot state, each answered with the status the operation
#: documents. `positive_data_acceptance` stays on for every operation; these operations only
#: add their own documented statuses to its accepted list, so any other answer to a
#: schema-valid request still fails. Everything else schemathesis found was fixed in the app
#: (see docs/production-readiness.md).
BUSINESS_RULES: list[tuple[str, str, list[str], str]] = [
    (
        "POST",
        "^/api/v1/auth/(verify-email|password-reset/confirm)$",
        ["400"],
        (
            "single-use tokens exist only once the server mailed them; an unknown, used or expired "
            "one is invalid_token (RFC 6749 §5.2 invalid_grant)"
        ),
    ),
    (
        "POST",
        "^/api/v1/users/me/password$",
        ["422"],
        "the current password is a secret the generator cannot know: incorrect_password",
    ),
    (
        "GET",
        "^/api/v1/(products|orders|users)$",
        ["422"],
        "cursors are HMAC-signed tokens the server issues: a forged one is invalid_cursor",
    ),
    (
        "POST",
        "^/api/v1/orders$",
        ["422", "428"],
        (
            "lines must name products on sale in one currency, a reused Idempotency-Key must carry "
            "the same body (IETF idempotency-key draft: 422); the key itself is required (RFC 6585)"
        ),
    ),
    (
        "PATCH",
        "^/api/v1/products/[^/]+$",
        ["412", "428"],
        (
            "updates are conditional on the current ETag: stale If-Match is 412 (RFC 9110 §13.1.1), "
            "a missing one 428 (RFC 6585)"
        ),
    ),
    (
        "(POST|PATCH)",
        "^/api/v1/webhooks(/[^/]+)?$",
        ["422"],
        "the SSRF guard resolves the URL's host at registration: only public addresses pass",
    ),
    (
        "POST",
        "^/api/v1/reports/sales$",
        ["422"],
        "end must not precede start and the range spans at most 366 days",
    ),
]
_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]


def _config(*, coverage: bool) -> Any:
    return schemathesis.Config.from_dict(
        {
            "phases": {"coverage": {"enabled": coverage}},
            "operations": [
                {
                    # One filter on the label ("POST /api/v1/orders"): separate method and path
                    # filters would match either, not both.
                    "include-name-regex": f"^{method} {path.removeprefix('^')}",
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": _ACCEPTED + statuses}
                    },
                }
                for method, path, statuses, _reason in BUSINESS_RULES
            ],
        }
    )


#: The schema comes from the app factory (building it opens no connection); each test sends
#: its cases to the app or server its fixture started. In-process, the coverage phase adds
#: every boundary and missing-part case the schema implies; through Nginx, where each case
#: costs a TLS round trip paced under the proxy's rate limit, random generation only.
_OPENAPI = create_app(make_settings()).openapi()
schema = schemathesis.openapi.from_dict(_OPENAPI, config=_config(coverage=True))
remote_schema = schemathesis.openapi.from_dict(_OPENAPI, config=_config(coverage=False))


@dataclass
class Identity:
    """A fuzzing account whose token is renewed whenever an operation may have spent it."""

    role: str
    email: str
    token: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class FuzzTarget:
    """Where cases go, and how the two accounts are (re)provisioned."""

    call_kwargs: dict[str, Any]
    login: Callable[[str], str]
    reactivate: Callable[[str], None]
    identities: dict[str, Identity] = field(default_factory=dict)
    pace: float = 0.0

    def provision(
        self, register: Callable[[str], None], role_sql: Callable[[str, str], None]
    ) -> None:
        for role in ("customer", "staff"):
            email = f"fuzz-{role}-{secrets.token_hex(4)}@example.com"
            register(email)
            role_sql(email, role)
            self.identities[role] = Identity(role, email, self.login(email))

    def renew(self, role: str) -> None:
        identity = self.identities[role]
        self.reactivate(identity.email)
        identity.token = self.login(identity.email)

    def run(self, case: Any, role: str, counter: str) -> None:
        CASES[counter] += 1
        if self.pace:
            time.sleep(self.pace)
        try:
            case.call_and_validate(headers=self.identities[role].headers, **self.call_kwargs)
        finally:
            if (case.method.upper(), case.operation.path) in SESSION_ENDING:
                self.renew(role)


def _sql(
    server: PostgresService, dbname: str
) -> tuple[Callable[[str, str], None], Callable[[str], None]]:
    # The first staff account comes from the CLI in production; here straight from SQL (the
    # e-mail addresses are generated above, never user input).
    def promote(email: str, role: str) -> None:
        server.execute(
            f"UPDATE users SET role = '{role}', email_verified = true WHERE email = '{email}'",
            dbname=dbname,
        )

    def reactivate(email: str) -> None:
        server.execute(f"UPDATE users SET is_active = true WHERE email = '{email}'", dbname=dbname)

    return promote, reactivate


def _create_database(server: PostgresService, template: str) -> str:
    name = f"fuzz_{uuid.uuid4().hex[:12]}"
    server.create_database(name, template=template)
    return name


# --- in-process ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inprocess(
    postgres_server: PostgresService, pg_template: str, redis_server: RedisService
) -> Iterator[FuzzTarget]:
    dbname = _create_database(postgres_server, pg_template)
    app = create_app(
        make_settings(
            environment="testing",
            database_url=postgres_server.url(dbname),
            redis_url=redis_server.url(7),
            log_level="WARNING",
            **FUZZ_LIMITS,
        )
    )

    def login(email: str) -> str:
        with schemathesis_asgi.get_client(app) as client:
            response = client.post(
                "/api/v1/auth/login", data={"username": email, "password": PASSWORD}
            )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def register(email: str) -> None:
        with schemathesis_asgi.get_client(app) as client:
            response = client.post(
                "/api/v1/auth/register", json={"email": email, "password": PASSWORD}
            )
        assert response.status_code == 202, response.text

    promote, reactivate = _sql(postgres_server, dbname)
    target = FuzzTarget({"app": app}, login, reactivate)
    try:
        target.provision(register, promote)
        yield target
    finally:
        # Schemathesis keeps the app's lifespan running for the process; close it here so
        # the database can go.
        schemathesis_asgi.shutdown_lifespans()
        postgres_server.drop_database(dbname)


@schema.parametrize()
@settings(FUZZ_SETTINGS, max_examples=INPROCESS_EXAMPLES)
def test_inprocess_as_customer(case: Any, inprocess: FuzzTarget) -> None:
    inprocess.run(case, "customer", "inprocess")


@schema.parametrize()
@settings(FUZZ_SETTINGS, max_examples=INPROCESS_EXAMPLES)
def test_inprocess_as_staff(case: Any, inprocess: FuzzTarget) -> None:
    inprocess.run(case, "staff", "inprocess")


def test_inprocess_stateful_as_staff(inprocess: FuzzTarget) -> None:
    """Sequences along the inferred links: what one operation returns feeds the next."""
    staff = "staff"

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            CASES["stateful"] += 1
            return {**inprocess.call_kwargs, "headers": inprocess.identities[staff].headers}

        def after_call(self, response: Any, case: Any) -> None:
            if (case.method.upper(), case.operation.path) in SESSION_ENDING:
                inprocess.renew(staff)

    Workflow.run(
        settings=settings(
            FUZZ_SETTINGS, max_examples=STATEFUL_EXAMPLES, stateful_step_count=STATEFUL_STEPS
        )
    )


# --- behind Nginx --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def behind_nginx(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: PostgresService,
    pg_template: str,
    redis_server: RedisService,
) -> Iterator[FuzzTarget]:
    from tests.integration.test_nginx_e2e import _start_nginx

    tmp = tmp_path_factory.mktemp("fuzz-nginx")
    dbname = _create_database(postgres_server, pg_template)
    env = slipway_env(
        ENVIRONMENT="production",
        SECRET_KEY=secrets.token_urlsafe(48),
        DATABASE_URL=postgres_server.url(dbname),
        REDIS_URL=redis_server.url(8),
        ALLOWED_HOSTS=f"{LOOPBACK},localhost",
        FORWARDED_ALLOW_IPS=LOOPBACK,
        PUBLIC_BASE_URL="https://api.example.com",
        LOG_LEVEL="WARNING",
        RATE_LIMIT_DEFAULT=FUZZ_LIMITS["rate_limit_default"],
        RATE_LIMIT_POLICIES=json.dumps(FUZZ_LIMITS["rate_limit_policies"]),
    )
    app = start_server(tmp, env, log_path=tmp / "app.log")
    stack = None
    try:
        static_root = tmp / "static"
        static_root.mkdir()
        tls = make_self_signed(tmp / "tls")
        stack = _start_nginx(tmp, [f"{LOOPBACK}:{app.port}"], tls, static_root)
        # Accounts are provisioned on the app's own port: Nginx's auth zone (10/min) is
        # what is being fuzzed, not a step of the setup.
        direct = httpx.Client(base_url=app.base_url, timeout=30)

        def login(email: str) -> str:
            response = direct.post(
                "/api/v1/auth/login", data={"username": email, "password": PASSWORD}
            )
            assert response.status_code == 200, response.text
            return str(response.json()["access_token"])

        def register(email: str) -> None:
            response = direct.post(
                "/api/v1/auth/register", json={"email": email, "password": PASSWORD}
            )
            assert response.status_code == 202, response.text

        promote, reactivate = _sql(postgres_server, dbname)
        target = FuzzTarget(
            {"base_url": f"https://{LOOPBACK}:{stack.https_port}", "verify": str(tls.cert)},
            login,
            reactivate,
            pace=NGINX_PACE_SECONDS,
        )
        target.provision(register, promote)
        yield target
        direct.close()
    finally:
        if stack is not None:
            stack.nginx.close()
        app.process.close()
        postgres_server.drop_database(dbname)


@pytest.mark.integration
@remote_schema.parametrize()
@settings(FUZZ_SETTINGS, max_examples=NGINX_EXAMPLES)
def test_behind_nginx_as_customer(case: Any, behind_nginx: FuzzTarget) -> None:
    behind_nginx.run(case, "customer", "nginx")


@pytest.mark.integration
@remote_schema.parametrize()
@settings(FUZZ_SETTINGS, max_examples=NGINX_EXAMPLES)
def test_behind_nginx_as_staff(case: Any, behind_nginx: FuzzTarget) -> None:
    behind_nginx.run(case, "staff", "nginx")


def test_enough_cases_were_generated(request: pytest.FixtureRequest) -> None:
    """Runs last in this module: the fuzz tests above must have generated >= 1000 cases."""
    fuzz_items = [
        item
        for item in request.session.items
        if item.module is request.module
        and item.name.startswith("test_")
        and item is not request.node
    ]
    if len(fuzz_items) < 5:
        pytest.skip("only part of the fuzz suite was selected")
    total = sum(CASES.values())
    print(f"schemathesis cases: {dict(CASES)} total={total}")
    assert total >= MIN_CASES, dict(CASES)
