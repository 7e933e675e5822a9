"""Report and dashboard routes (staff only)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from slipway.identity.deps import StaffUser
from slipway.platform.db.session import SessionDep
from slipway.platform.services import ServicesDep
from slipway.reports.dashboard import build_dashboard
from slipway.reports.schemas import (
    DashboardQuery,
    DashboardRead,
    ReportAccepted,
    ReportRead,
    SalesReportRequest,
)
from slipway.reports.service import ReportService

router = APIRouter(tags=["reports"])


async def get_reports(session: SessionDep, services: ServicesDep) -> ReportService:
    return ReportService(session, services)


ReportsDep = Annotated[ReportService, Depends(get_reports)]


@router.post(
    "/reports/sales",
    response_model=ReportAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Request a sales report",
)
async def request_sales_report(
    data: SalesReportRequest,
    request: Request,
    response: Response,
    reports: ReportsDep,
    principal: StaffUser,
) -> ReportAccepted:
    """Queues a CSV of the orders in [start, end]; poll the Location for its status."""
    report_id = await reports.request_sales_report(principal.user_id, data)
    url = str(request.url_for("get_report", report_id=report_id))
    response.headers["Location"] = url
    return ReportAccepted(id=report_id, status="queued", status_url=url)


# `:uuid` in the paths: without it, `/reports/sales` also matched `/reports/{report_id}`, so
# `GET /reports/sales` was routed to the status endpoint (a 422) instead of a 405 whose Allow
# header names POST only (found by schemathesis).
@router.get("/reports/{report_id:uuid}", response_model=ReportRead, summary="Report status")
async def get_report(
    report_id: uuid.UUID, request: Request, reports: ReportsDep, _: StaffUser
) -> ReportRead:
    """queued, running, succeeded (with a download URL) or failed."""
    url = str(request.url_for("download_report", report_id=report_id))
    return await reports.get_report(report_id, url)


@router.get(
    "/reports/{report_id:uuid}/download",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "The CSV file"}},
    summary="Download a report",
)
async def download_report(
    report_id: uuid.UUID, reports: ReportsDep, _: StaffUser
) -> StreamingResponse:
    """Streams the CSV; 409 while the report is not ready."""
    filename, chunks = await reports.open_download(report_id)
    return StreamingResponse(
        chunks,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/dashboard", response_model=DashboardRead, summary="Sales dashboard")
async def dashboard(
    session: SessionDep,
    services: ServicesDep,
    _: StaffUser,
    days: Annotated[int, Query(ge=1, le=366)] = 30,
    low_stock_threshold: Annotated[int, Query(ge=0, le=1_000_000)] = 10,
) -> Response:
    """Orders and revenue by status, top products and low stock; three queries, cached."""
    query = DashboardQuery(days=days, low_stock_threshold=low_stock_threshold)
    cache = services.cache

    async def load() -> bytes:
        return (await build_dashboard(session, query)).model_dump_json().encode()

    key = cache.key("dashboard", params={"days": days, "low": low_stock_threshold})
    body, _hit = await cache.get_or_load(key, load, ttl=services.settings.cache_dashboard_ttl)
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})
