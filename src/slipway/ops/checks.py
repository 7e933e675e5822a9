"""The result model `slipway doctor` and `slipway probe` share, and its two renderings.

A `Check` is declared once (id, title, severity, fix) with the function that evaluates it
against a context; running it yields a `Result`. A `Report` renders as a rich table or as
JSON, and its exit code is 1 when any check failed (warnings do not fail a run).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

from rich.console import Console
from rich.table import Table
from rich.text import Text

C = TypeVar("C")


class Status(StrEnum):
    PASS = "pass"  # noqa: S105 - a check status, not a password
    WARN = "warn"
    FAIL = "fail"


class Severity(StrEnum):
    """How bad a failure of this check is (independent of whether it failed)."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    detail: str


def passed(detail: str) -> Outcome:
    return Outcome(Status.PASS, detail)


def warned(detail: str) -> Outcome:
    return Outcome(Status.WARN, detail)


def failed(detail: str) -> Outcome:
    return Outcome(Status.FAIL, detail)


@dataclass(frozen=True, slots=True)
class Check(Generic[C]):
    id: str
    title: str
    severity: Severity
    fix: str
    evaluate: Callable[[C], Outcome]


@dataclass(frozen=True, slots=True)
class Result:
    id: str
    title: str
    severity: Severity
    status: Status
    detail: str
    fix: str

    def to_dict(self) -> dict[str, str]:
        return {key: str(value) for key, value in asdict(self).items()}


class CheckRegistry(Generic[C]):
    """An ordered set of checks, declared with the `check` decorator."""

    def __init__(self) -> None:
        self._checks: dict[str, Check[C]] = {}

    def check(
        self, check_id: str, title: str, severity: Severity, fix: str
    ) -> Callable[[Callable[[C], Outcome]], Callable[[C], Outcome]]:
        def register(function: Callable[[C], Outcome]) -> Callable[[C], Outcome]:
            if check_id in self._checks:
                raise ValueError(f"duplicate check id {check_id!r}")
            self._checks[check_id] = Check(check_id, title, severity, fix, function)
            return function

        return register

    @property
    def checks(self) -> list[Check[C]]:
        return list(self._checks.values())

    @property
    def ids(self) -> list[str]:
        return list(self._checks)

    def run(self, context: C, only: Iterable[str] | None = None) -> list[Result]:
        selected = set(only) if only is not None else None
        return [
            run_check(check, context)
            for check in self._checks.values()
            if selected is None or check.id in selected
        ]


def run_check(check: Check[C], context: C) -> Result:
    try:
        outcome = check.evaluate(context)
    except Exception as exc:  # a broken check is a failed check, never a crashed audit
        outcome = failed(f"the check itself raised {type(exc).__name__}: {exc}")
    return Result(check.id, check.title, check.severity, outcome.status, outcome.detail, check.fix)


@dataclass
class Report:
    tool: str
    target: str
    results: list[Result] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {status.value: sum(r.status is status for r in self.results) for status in Status}

    @property
    def status(self) -> Status:
        statuses = {r.status for r in self.results}
        for status in (Status.FAIL, Status.WARN):
            if status in statuses:
                return status
        return Status.PASS

    @property
    def exit_code(self) -> int:
        return 1 if self.status is Status.FAIL else 0

    def by_id(self) -> dict[str, Result]:
        return {r.id: r for r in self.results}

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "target": self.target,
            "status": self.status.value,
            "summary": self.counts,
            "checks": [r.to_dict() for r in self.results],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"


_STYLE = {Status.PASS: "green", Status.WARN: "yellow", Status.FAIL: "bold red"}
_SEVERITY_STYLE = {
    Severity.CRITICAL: "bold red",
    Severity.HIGH: "red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "dim",
}


def render_table(report: Report, console: Console) -> None:
    table = Table(
        title=f"slipway {report.tool}: {report.target}",
        title_justify="left",
        show_lines=False,
        expand=False,
    )
    table.add_column("status", no_wrap=True)
    table.add_column("check", ratio=2)
    table.add_column("severity", no_wrap=True)
    table.add_column("detail / fix", ratio=3)
    for result in report.results:
        name = Text(result.id, style="bold")
        name.append(f"\n{result.title}", style="dim")
        cell = Text(result.detail)
        if result.status is not Status.PASS:
            cell.append("\nfix: ", style="bold")
            cell.append(result.fix)
        table.add_row(
            Text(result.status.value.upper(), style=_STYLE[result.status]),
            name,
            Text(result.severity.value, style=_SEVERITY_STYLE[result.severity]),
            cell,
        )
    console.print(table)
    counts = report.counts
    console.print(
        Text.assemble(
            (f"{counts['pass']} passed", "green"),
            ", ",
            (f"{counts['warn']} warnings", "yellow"),
            ", ",
            (f"{counts['fail']} failed", "bold red" if counts["fail"] else "green"),
        )
    )


def emit(report: Report, output: OutputFormat, console: Console | None = None) -> None:
    """Print the report in the chosen format (JSON: exactly one document on stdout)."""
    # Piped output (CI logs) gets a readable width instead of rich's 80-column fallback.
    console = console or Console(width=None if sys.stdout.isatty() else 140)
    if output is OutputFormat.json:
        console.file.write(report.to_json())
        console.file.flush()
    else:
        render_table(report, console)


def results_by_status(results: Sequence[Result], status: Status) -> list[str]:
    return [r.id for r in results if r.status is status]
