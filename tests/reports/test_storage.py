"""The file-storage interface reports go through: the local directory (default) and an
S3-compatible backend selected by setting, here a real S3-compatible server (moto's, in its
own process on loopback) reached through boto3 over HTTP."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from fastapi import FastAPI

from slipway.platform.storage import LocalStorage, S3Storage, StorageError, create_storage
from slipway.reports.tasks import report_key
from tests.conftest import make_settings
from tests.factories import staff
from tests.support.ports import LOOPBACK, free_port
from tests.support.services import ManagedProcess

MOTO_SERVER = str(Path(sys.executable).with_name("moto_server"))
BUCKET = "slipway-reports"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # the emulator accepts any credentials
    "AWS_DEFAULT_REGION": "us-east-1",
}


def payload(tmp_path: Path, size: int = 200_000) -> Path:
    source = tmp_path / "source.csv"
    source.write_bytes(bytes(range(256)) * (size // 256) + b"tail")
    return source


async def read_all(storage: Any, key: str) -> tuple[bytes, int]:
    chunks = [chunk async for chunk in storage.stream(key)]
    return b"".join(chunks), len(chunks)


async def test_local_storage_round_trip(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    source = payload(tmp_path)
    key = "reports/sales/abc.csv"

    assert not await storage.exists(key)
    size = await storage.put_file(key, source, "text/csv")

    assert size == source.stat().st_size
    assert await storage.exists(key)
    body, chunks = await read_all(storage, key)
    assert body == source.read_bytes()
    assert chunks == 4  # streamed in 64 KiB chunks, never read whole
    assert [p.name for p in (tmp_path / "root" / "reports" / "sales").iterdir()] == ["abc.csv"]
    await storage.delete(key)
    assert not await storage.exists(key)
    await storage.delete(key)  # deleting twice is fine


async def test_keys_cannot_escape_the_storage(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    source = payload(tmp_path, 10)
    for key in ("../outside.csv", "/etc/passwd", "a/../../b", "reports/../../x", "", "a b"):
        with pytest.raises(StorageError):
            await storage.put_file(key, source, "text/csv")
    assert not (tmp_path / "outside.csv").exists()


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("s3")
    port = free_port()
    server = ManagedProcess(
        [MOTO_SERVER, "-H", LOOPBACK, "-p", str(port)],
        name="moto-s3",
        cwd=workdir,
        log_path=workdir / "moto.log",
    ).start()
    try:
        server.wait_for_port(port, timeout=60)
        endpoint = f"http://{LOOPBACK}:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, **_credentials())
        client.create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.close()


def _credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_DEFAULT_REGION"],
    }


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    # boto3 takes credentials from the environment, as it would from an instance role.
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("s3_credentials")
async def test_s3_backend_is_selected_by_setting_and_round_trips(
    s3_endpoint: str, tmp_path: Path
) -> None:
    settings = make_settings(
        storage_backend="s3", s3_bucket=BUCKET, s3_endpoint_url=s3_endpoint, s3_region="us-east-1"
    )
    storage = create_storage(settings)
    assert isinstance(storage, S3Storage)
    source = payload(tmp_path)
    key = f"reports/sales/{uuid.uuid4()}.csv"

    assert not await storage.exists(key)
    assert await storage.put_file(key, source, "text/csv") == source.stat().st_size
    assert await storage.exists(key)
    body, chunks = await read_all(storage, key)
    assert body == source.read_bytes()
    assert chunks >= 2
    head = boto3.client("s3", endpoint_url=s3_endpoint, **_credentials()).head_object(
        Bucket=BUCKET, Key=key
    )
    assert head["ContentType"] == "text/csv"
    await storage.delete(key)
    assert not await storage.exists(key)

    with pytest.raises(StorageError):
        create_storage(make_settings(storage_backend="s3", s3_endpoint_url=s3_endpoint))
    assert isinstance(create_storage(make_settings()), LocalStorage)


class TestReportsOnS3:
    """A report built by the job lands in the bucket and is streamed back from it."""

    @pytest.fixture
    def backend(self) -> str:
        return "sqlite"

    @pytest.fixture
    def settings_overrides(self, s3_endpoint: str, s3_credentials: None) -> dict[str, Any]:
        return {
            "rate_limit_enabled": False,
            "jobs_backend": "embedded",
            "storage_backend": "s3",
            "s3_bucket": BUCKET,
            "s3_endpoint_url": s3_endpoint,
            "s3_region": "us-east-1",
        }

    async def test_report_goes_through_s3(
        self, client: httpx.AsyncClient, app: FastAPI, s3_endpoint: str
    ) -> None:
        admin = await staff(client, app)
        accepted = await client.post(
            "/api/v1/reports/sales",
            json={"start": "2026-01-01", "end": "2026-01-02"},
            headers=admin.headers,
        )
        assert accepted.status_code == 202
        deadline = time.monotonic() + 30
        while (report := (await client.get(accepted.headers["location"],
                                           headers=admin.headers)).json())["status"] not in (
            "succeeded", "failed",
        ):  # fmt: skip
            assert time.monotonic() < deadline, report
            await asyncio.sleep(0.05)
        assert report["status"] == "succeeded", report
        objects = boto3.client("s3", endpoint_url=s3_endpoint, **_credentials()).list_objects_v2(
            Bucket=BUCKET, Prefix=report_key(report["id"])
        )
        assert [o["Key"] for o in objects.get("Contents", [])] == [report_key(report["id"])]
        download = await client.get(report["download_url"], headers=admin.headers)
        assert download.status_code == 200
        assert download.text.startswith("order_id,created_at,customer_id")


@pytest.mark.usefixtures("s3_credentials")
async def test_an_unreachable_store_is_an_error_not_a_missing_file() -> None:
    settings = make_settings(
        storage_backend="s3",
        s3_bucket=BUCKET,
        s3_endpoint_url=f"http://{LOOPBACK}:{free_port()}",  # nothing listens there
        s3_region="us-east-1",
    )
    storage = create_storage(settings)
    with pytest.raises(Exception, match="Could not connect"):
        await storage.exists("reports/sales/x.csv")
