"""Reports: queue a sales report, read its status, stream its file."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession

from slipway.platform.errors import ConflictError, NotFoundError
from slipway.platform.jobs.models import Job
from slipway.platform.services import Services
from slipway.platform.storage import create_storage
from slipway.reports.schemas import ReportRead, SalesReportRequest
from slipway.reports.tasks import SALES_REPORT


class ReportNotFoundError(NotFoundError):
    code = "report_not_found"
    message = "The report was not found."


class ReportNotReadyError(ConflictError):
    code = "report_not_ready"
    message = "The report is not ready yet; poll its status."


class ReportService:
    def __init__(self, session: AsyncSession, services: Services) -> None:
        self.session = session
        self.services = services

    async def request_sales_report(
        self, owner_id: uuid.UUID, data: SalesReportRequest
    ) -> uuid.UUID:
        """Queue the report job (sent once the request commits)."""
        payload = {"start": data.start.isoformat(), "end": data.end.isoformat()}
        job_id: uuid.UUID = await self.services.jobs.enqueue(
            self.session, SALES_REPORT, payload, owner_id=owner_id
        )
        return job_id

    async def _job(self, report_id: uuid.UUID) -> Job:
        job = await self.session.get(Job, report_id, populate_existing=True)
        if job is None or job.kind != SALES_REPORT:
            raise ReportNotFoundError
        return job

    async def get_report(self, report_id: uuid.UUID, download_url: str) -> ReportRead:
        job = await self._job(report_id)
        result = job.result or {}
        return ReportRead(
            id=job.id,
            status=job.status,  # type: ignore[arg-type]
            start=job.payload.get("start"),
            end=job.payload.get("end"),
            rows=result.get("rows"),
            size_bytes=result.get("size_bytes"),
            download_url=download_url if job.status == "succeeded" else None,
            # Internal error text stays in the job row and logs, never in the API.
            error="The report could not be built." if job.status == "failed" else None,
            created_at=job.created_at,
            finished_at=job.finished_at,
        )

    async def open_download(self, report_id: uuid.UUID) -> tuple[str, AsyncIterator[bytes]]:
        job = await self._job(report_id)
        if job.status != "succeeded" or not job.result:
            raise ReportNotReadyError
        key = str(job.result["key"])
        storage = create_storage(self.services.settings)
        if not await storage.exists(key):
            raise ReportNotFoundError("The report file has expired.")
        filename = f"sales-{job.payload.get('start')}-{job.payload.get('end')}.csv"
        return filename, storage.stream(key)
