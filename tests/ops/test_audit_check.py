"""The dependency check of `slipway doctor` (slipway.ops.audit_check), on throwaway
checkouts: a lock file, and the record `scripts/audit` leaves (pip-audit's JSON report and
the hash of the lock it audited)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from slipway.ops.audit_check import (
    AUDIT_REPORT,
    AUDITED_LOCK_HASH,
    CHECK_ID,
    MAX_AUDIT_AGE_DAYS,
    MAX_LOCK_AGE_DAYS,
    dependency_audit,
    register_audit_check,
)
from slipway.ops.checks import CheckRegistry, Status

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
LOCK_TEXT = 'version = 1\n[[package]]\nname = "fastapi"\nversion = "0.165.0"\n'


@dataclass
class Checkout:
    cwd: Path


def _set_mtime(path: Path, when: dt.datetime) -> None:
    os.utime(path, (when.timestamp(), when.timestamp()))


def _checkout(tmp_path: Path, *, lock_age_days: int = 3) -> Checkout:
    lock = tmp_path / "uv.lock"
    lock.write_text(LOCK_TEXT, encoding="utf-8")
    _set_mtime(lock, NOW - dt.timedelta(days=lock_age_days))
    return Checkout(tmp_path)


def _record(
    checkout: Checkout,
    *,
    vulns: list[dict[str, object]] | None = None,
    age_days: int = 1,
    lock_hash: str | None = "current",
) -> None:
    report = checkout.cwd / AUDIT_REPORT
    report.parent.mkdir(parents=True, exist_ok=True)
    dependencies = [
        {"name": "fastapi", "version": "0.165.0", "vulns": []},
        {"name": "jinja2", "version": "3.1.2", "vulns": vulns or []},
    ]
    report.write_text(json.dumps({"dependencies": dependencies, "fixes": []}), encoding="utf-8")
    _set_mtime(report, NOW - dt.timedelta(days=age_days))
    if lock_hash is not None:
        digest = (
            hashlib.sha256((checkout.cwd / "uv.lock").read_bytes()).hexdigest()
            if lock_hash == "current"
            else lock_hash
        )
        (checkout.cwd / AUDITED_LOCK_HASH).write_text(digest + "\n", encoding="utf-8")


def test_passes_for_a_fresh_clean_audit_of_this_lock(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path)
    _record(checkout)

    outcome = dependency_audit(checkout, now=NOW)

    assert outcome.status is Status.PASS, outcome.detail
    assert "uv.lock changed 2026-05-29 (3 days ago)" in outcome.detail
    assert "2 packages, no known vulnerabilities" in outcome.detail


def test_fails_naming_each_known_vulnerability(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path)
    _record(
        checkout,
        vulns=[{"id": "GHSA-h5c8-rqwp-cp95", "fix_versions": ["3.1.3"], "aliases": []}],
        lock_hash=None,  # a failed audit records no hash
    )

    outcome = dependency_audit(checkout, now=NOW)

    assert outcome.status is Status.FAIL
    assert "1 known: jinja2==3.1.2 GHSA-h5c8-rqwp-cp95 (fixed in 3.1.3)" in outcome.detail


def test_warns_when_no_audit_ran(tmp_path: Path) -> None:
    outcome = dependency_audit(_checkout(tmp_path), now=NOW)

    assert outcome.status is Status.WARN
    assert "no audit ran" in outcome.detail


def test_warns_when_the_lock_changed_after_the_audit(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path)
    _record(checkout)
    (tmp_path / "uv.lock").write_text(LOCK_TEXT + "# upgraded\n", encoding="utf-8")

    outcome = dependency_audit(checkout, now=NOW)

    assert outcome.status is Status.WARN
    assert "did not finish for this lock file" in outcome.detail


def test_warns_on_an_old_audit(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path)
    _record(checkout, age_days=MAX_AUDIT_AGE_DAYS + 1)

    outcome = dependency_audit(checkout, now=NOW)

    assert outcome.status is Status.WARN
    assert f"older than {MAX_AUDIT_AGE_DAYS} days" in outcome.detail


def test_warns_on_an_old_lock(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path, lock_age_days=MAX_LOCK_AGE_DAYS + 30)
    _record(checkout)

    outcome = dependency_audit(checkout, now=NOW)

    assert outcome.status is Status.WARN
    assert f"no dependency update for over {MAX_LOCK_AGE_DAYS} days" in outcome.detail


def test_warns_without_a_lock_file(tmp_path: Path) -> None:
    outcome = dependency_audit(Checkout(tmp_path), now=NOW)

    assert outcome.status is Status.WARN
    assert "no uv.lock" in outcome.detail


def test_registers_in_a_doctor_registry(tmp_path: Path) -> None:
    registry: CheckRegistry[Checkout] = CheckRegistry()
    register_audit_check(registry)

    (result,) = registry.run(_checkout(tmp_path))

    assert result.id == CHECK_ID
    assert result.status is Status.WARN
    assert "scripts/audit" in result.fix
