"""The dependency check of `slipway doctor`: how old the lock file is, and whether a
vulnerability audit of exactly this lock file ran and found nothing.

The audit is `scripts/audit` (pip-audit over `uv export --frozen --no-dev`), run by CI on
every push and by hand; it leaves `.audit/pip-audit.json` (pip-audit's JSON report) and
`.audit/uv.lock.sha256` (the lock it audited) beside the code. A lock changed since then
has not been audited. Run doctor from the checkout: the runtime image has no uv.lock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from slipway.ops.checks import CheckRegistry, Outcome, Severity, failed, passed, warned

LOCK_FILE = Path("uv.lock")
AUDIT_REPORT = Path(".audit/pip-audit.json")
AUDITED_LOCK_HASH = Path(".audit/uv.lock.sha256")
#: Dependencies untouched this long miss security fixes that arrive as routine updates
#: (Dependabot proposes them weekly).
MAX_LOCK_AGE_DAYS = 90
#: New advisories appear daily; CI re-audits on every push.
MAX_AUDIT_AGE_DAYS = 7
GIT_TIMEOUT_SECONDS = 5.0

CHECK_ID = "deps.audit"
CHECK_TITLE = "Lock file current and audited for known vulnerabilities"
CHECK_FIX = (
    "Run ./scripts/audit (pip-audit over uv.lock) and upgrade what it names "
    "(`uv lock --upgrade-package NAME`); merge Dependabot's updates."
)


class HasWorkingDirectory(Protocol):
    """What the check needs from doctor's context."""

    @property
    def cwd(self) -> Path: ...


@dataclass(frozen=True)
class Vulnerability:
    package: str
    version: str
    id: str
    fix_versions: tuple[str, ...]

    def describe(self) -> str:
        fix = f" (fixed in {', '.join(self.fix_versions)})" if self.fix_versions else ""
        return f"{self.package}=={self.version} {self.id}{fix}"


@dataclass(frozen=True)
class AuditRecord:
    audited_at: dt.datetime
    lock_sha256: str | None
    packages: int
    vulnerabilities: tuple[Vulnerability, ...]
    not_audited: tuple[str, ...]


def _utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)


def _git(directory: Path, *args: str) -> str | None:
    """A git command's output, or None when git or the repository is not there."""
    git = shutil.which("git")
    if git is None:
        return None
    try:
        result = subprocess.run(
            [git, *args],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def lock_changed_at(lock: Path) -> dt.datetime:
    """When the lock file last changed: its last commit when git knows it and it has no
    uncommitted changes (a checkout resets file times), else its modification time."""
    committed = _git(lock.parent, "log", "-1", "--format=%ct", "--", lock.name)
    if (
        committed
        and committed.isdigit()
        and _git(lock.parent, "status", "--porcelain", "--", lock.name) == ""
    ):
        return _utc(int(committed))
    return _utc(lock.stat().st_mtime)


def read_audit_record(cwd: Path) -> AuditRecord | None:
    """The last audit's record, or None when no audit left one here."""
    report_path = cwd / AUDIT_REPORT
    try:
        report: dict[str, Any] = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    hash_path = cwd / AUDITED_LOCK_HASH
    lock_sha256 = hash_path.read_text(encoding="utf-8").strip() if hash_path.is_file() else None
    dependencies = report.get("dependencies", [])
    vulnerabilities = tuple(
        Vulnerability(
            package=str(dependency["name"]),
            version=str(dependency.get("version", "?")),
            id=str(vuln["id"]),
            fix_versions=tuple(str(v) for v in vuln.get("fix_versions", [])),
        )
        for dependency in dependencies
        for vuln in dependency.get("vulns", [])
    )
    not_audited = tuple(str(d["name"]) for d in dependencies if "skip_reason" in d)
    return AuditRecord(
        audited_at=_utc(report_path.stat().st_mtime),
        lock_sha256=lock_sha256,
        packages=len(dependencies),
        vulnerabilities=vulnerabilities,
        not_audited=not_audited,
    )


def _days(delta: dt.timedelta) -> int:
    return max(0, delta.days)


def dependency_audit(ctx: HasWorkingDirectory, now: dt.datetime | None = None) -> Outcome:
    """The lock file's age and the state of its vulnerability audit."""
    now = now or dt.datetime.now(dt.UTC)
    lock = ctx.cwd / LOCK_FILE
    if not lock.is_file():
        return warned(f"no {LOCK_FILE} in {ctx.cwd}: run doctor from the checkout to audit it")
    changed = lock_changed_at(lock)
    lock_age = _days(now - changed)
    lock_summary = f"{LOCK_FILE} changed {changed:%Y-%m-%d} ({lock_age} days ago)"

    record = read_audit_record(ctx.cwd)
    if record is None:
        return warned(f"{lock_summary}; no audit record ({AUDIT_REPORT}): no audit ran here")
    if record.vulnerabilities:
        found = "; ".join(v.describe() for v in record.vulnerabilities)
        count = len(record.vulnerabilities)
        return failed(
            f"{lock_summary}; audit of {record.audited_at:%Y-%m-%d}: {count} known: {found}"
        )
    current_hash = hashlib.sha256(lock.read_bytes()).hexdigest()
    if record.lock_sha256 != current_hash:
        return warned(
            f"{lock_summary}; the last audit ({record.audited_at:%Y-%m-%d}) did not finish "
            "for this lock file (changed since, or the audit failed)"
        )
    if record.not_audited:
        return warned(f"{lock_summary}; not audited: {', '.join(record.not_audited)}")
    audit_age = _days(now - record.audited_at)
    audit_summary = (
        f"pip-audit {record.audited_at:%Y-%m-%d} ({audit_age} days ago): "
        f"{record.packages} packages, no known vulnerabilities"
    )
    if audit_age > MAX_AUDIT_AGE_DAYS:
        return warned(f"{lock_summary}; {audit_summary}; older than {MAX_AUDIT_AGE_DAYS} days")
    if lock_age > MAX_LOCK_AGE_DAYS:
        return warned(
            f"{lock_summary}: no dependency update for over {MAX_LOCK_AGE_DAYS} days; "
            f"{audit_summary}"
        )
    return passed(f"{lock_summary}; {audit_summary}")


def register_audit_check(registry: CheckRegistry[Any]) -> None:
    """Add the check to doctor's registry (its context has `cwd`)."""
    registry.check(CHECK_ID, CHECK_TITLE, Severity.HIGH, CHECK_FIX)(dependency_audit)
