"""The sales-report job: stream orders to CSV, then store the file."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

from slipway.platform.jobs.registry import JobContext, job
from slipway.platform.storage import create_storage
from slipway.reports.csv_export import write_sales_csv

SALES_REPORT = "reports.sales"


def report_key(job_id: object) -> str:
    return f"reports/sales/{job_id}.csv"


@job(SALES_REPORT)
async def build_sales_report(ctx: JobContext) -> dict[str, Any]:
    """Idempotent: a redelivered run rewrites the same object under the same key."""
    start = date.fromisoformat(ctx.payload["start"])
    end = date.fromisoformat(ctx.payload["end"])
    storage = create_storage(ctx.services.settings)
    key = report_key(ctx.job_id)
    workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="slipway-report-"))
    try:
        target = workdir / "report.csv"
        rows = await write_sales_csv(ctx.session, start, end, target)
        size = await storage.put_file(key, target, "text/csv")
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)
    return {
        "key": key,
        "rows": rows,
        "size_bytes": size,
        "start": start.isoformat(),
        "end": end.isoformat(),
    }
