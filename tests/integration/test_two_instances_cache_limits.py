"""Two real app instances (uvicorn --factory, separate processes and ports) sharing one
Redis: cache invalidation and rate-limit counters are global, not per process."""

from __future__ import annotations

import asyncio
import itertools
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import TEST_SECRET
from tests.integration.conftest import slipway_env
from tests.support.ports import LOOPBACK, free_port
from tests.support.services import PORT_ATTEMPTS, ManagedProcess, RedisService

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.timeout(180)]

TESTING_LIMIT = 7
DEFAULT_LIMIT = 9


@dataclass
class Instance:
    process: ManagedProcess
    port: int

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"


def start_instance(env: dict[str, str], cwd: Path, name: str) -> Instance:
    for attempt in range(PORT_ATTEMPTS):
        port = free_port()
        process = ManagedProcess(
            [
                sys.executable, "-m", "uvicorn", "--factory", "slipway.app:create_app",
                "--host", LOOPBACK, "--port", str(port), "--no-access-log",
            ],
            name=f"uvicorn-{name}",
            env=env,
            inherit_env=False,
            cwd=cwd,
            log_path=cwd / f"{name}.{attempt}.log",
        ).start()  # fmt: skip
        try:
            process.wait_for_http(f"http://{LOOPBACK}:{port}/health/ready", timeout=60)
        except Exception:
            process.close()
            if "address already in use" in process.log_text().lower():
                continue
            raise
        return Instance(process, port)
    raise RuntimeError("no free port for uvicorn")


@pytest.fixture(scope="module")
def instances(
    redis_server: RedisService, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Instance, Instance]]:
    workdir = tmp_path_factory.mktemp("two-instances")
    run = uuid.uuid4().hex[:8]
    env = slipway_env(
        ENVIRONMENT="testing",
        SECRET_KEY=TEST_SECRET,
        LOG_FORMAT="json",
        DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'app.db'}",
        REDIS_URL=redis_server.url(),
        # Keys of this run only: the session's Redis is shared.
        CACHE_PREFIX=f"slipway-it-{run}",
        RATE_LIMIT_KEY_PREFIX=f"slipway-it:{run}",
        RATE_LIMIT_POLICIES=orjson.dumps({"testing": f"{TESTING_LIMIT}/minute"}).decode(),
        RATE_LIMIT_DEFAULT=f"{DEFAULT_LIMIT}/minute",
    )
    started: list[Instance] = []
    try:
        started.append(start_instance(env, workdir, "a"))
        started.append(start_instance(env, workdir, "b"))
        yield started[0], started[1]
    finally:
        for instance in started:
            instance.process.close()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def test_instances_are_separate_processes(instances: tuple[Instance, Instance]) -> None:
    a, b = instances
    assert a.process.pid != b.process.pid
    assert a.port != b.port


def test_entry_invalidated_through_a_is_gone_on_b(
    instances: tuple[Instance, Instance], http: httpx.Client
) -> None:
    a, b = instances
    loaded_on_a = http.get(a.url("/_test/cache/shared"))
    served_by_b = http.get(b.url("/_test/cache/shared"))
    assert (loaded_on_a.headers["x-cache"], served_by_b.headers["x-cache"]) == ("MISS", "HIT")
    # B serves A's bytes: the entry lives in Redis, not in either process.
    assert served_by_b.content == loaded_on_a.content
    assert served_by_b.headers["etag"] == loaded_on_a.headers["etag"]

    assert http.delete(a.url("/_test/cache/shared")).status_code == 204

    reloaded_by_b = http.get(b.url("/_test/cache/shared"))
    assert reloaded_by_b.headers["x-cache"] == "MISS"
    assert reloaded_by_b.json()["pid"] == b.process.pid
    assert reloaded_by_b.json()["pid"] != loaded_on_a.json()["pid"]
    # And A now reads what B stored.
    assert http.get(a.url("/_test/cache/shared")).content == reloaded_by_b.content


def test_tag_invalidated_through_b_is_gone_on_a(
    instances: tuple[Instance, Instance], http: httpx.Client
) -> None:
    a, b = instances
    tagged = {"tags": "catalog"}
    http.get(a.url("/_test/cache/tagged-1"), params=tagged)
    http.get(a.url("/_test/cache/tagged-2"), params=tagged)
    http.get(a.url("/_test/cache/untagged"))
    assert http.get(b.url("/_test/cache/tagged-1"), params=tagged).headers["x-cache"] == "HIT"

    assert http.delete(b.url("/_test/cache-tags/catalog")).status_code == 204

    assert http.get(a.url("/_test/cache/tagged-1"), params=tagged).headers["x-cache"] == "MISS"
    assert http.get(a.url("/_test/cache/tagged-2"), params=tagged).headers["x-cache"] == "MISS"
    assert http.get(b.url("/_test/cache/untagged")).headers["x-cache"] == "HIT"


def test_concurrent_cold_reads_on_both_instances_load_once(
    instances: tuple[Instance, Instance],
) -> None:
    """Cold reads racing on two processes: the Redis lock lets one process load."""
    a, b = instances

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=20) as client:
            urls = [a.url("/_test/cache/cold"), b.url("/_test/cache/cold")] * 20
            return await asyncio.gather(*(client.get(u, params={"delay_ms": 300}) for u in urls))

    responses = asyncio.run(burst())
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert [r.headers["x-cache"] for r in responses].count("MISS") == 1


def test_named_limit_is_global_across_instances(
    instances: tuple[Instance, Instance], http: httpx.Client
) -> None:
    a, b = instances
    client_ip = {"X-Forwarded-For": "198.51.100.20"}  # one client, via the trusted proxy
    responses = [
        http.get(instance.url("/_test/limited"), headers=client_ip)
        for instance in itertools.islice(itertools.cycle((a, b)), TESTING_LIMIT * 2)
    ]
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * TESTING_LIMIT + [429] * TESTING_LIMIT
    # Both instances count down the same budget.
    assert [r.headers["ratelimit-remaining"] for r in responses[:TESTING_LIMIT]] == [
        str(n) for n in range(TESTING_LIMIT - 1, -1, -1)
    ]
    refused = responses[TESTING_LIMIT]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    # A different client still has its own budget on either instance.
    other = http.get(b.url("/_test/limited"), headers={"X-Forwarded-For": "198.51.100.21"})
    assert other.status_code == 200


def test_default_api_limit_is_global_across_instances(
    instances: tuple[Instance, Instance], http: httpx.Client
) -> None:
    a, b = instances
    client_ip = {"X-Forwarded-For": "198.51.100.30"}
    statuses = [
        http.get(instance.url("/api/v1/_no_such_route"), headers=client_ip).status_code
        for instance in itertools.islice(itertools.cycle((a, b)), DEFAULT_LIMIT + 3)
    ]
    assert statuses == [404] * DEFAULT_LIMIT + [429] * 3
    assert http.get(a.url("/health/live"), headers=client_ip).status_code == 200
