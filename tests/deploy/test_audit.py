"""The dependency audit: `scripts/audit` (pip-audit over the locked production
dependencies) runs in CI before the image is built and fails it on a known vulnerability;
Dependabot keeps the lock, the actions and the images current.

pip-audit's vulnerability data is PyPI's per-release JSON, which this machine's PyPI access
does not serve: here the script runs with AUDIT_DRY_RUN (the export and pip-audit's
collection of every locked package, without the lookup). CI on GitHub runs the real audit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.deploy._tools import ROOT, load_yaml, report, run

pytestmark = pytest.mark.deploy

SCRIPT = ROOT / "scripts" / "audit"
CI_CD = ROOT / ".github" / "workflows" / "ci-cd.yml"


def _workflow() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(CI_CD)
    return document


def test_ci_audits_before_the_image_is_built() -> None:
    jobs = _workflow()["jobs"]
    audits = [
        (name, step)
        for name, job in jobs.items()
        for step in job["steps"]
        if step.get("run", "").strip() == "./scripts/audit"
    ]
    assert len(audits) == 1, "one audit step"
    job_name, step = audits[0]
    assert not step.get("continue-on-error"), "a finding must fail the job"
    assert job_name in jobs["build"]["needs"], "no image is built past a failed audit"
    installs = "\n".join(s.get("run", "") for s in jobs[job_name]["steps"])
    assert "uv sync --frozen --all-groups" in installs, "pip-audit comes from the dev group"


def test_the_script_fails_on_findings_and_audits_only_what_ships() -> None:
    text = SCRIPT.read_text(encoding="utf-8")
    assert SCRIPT.stat().st_mode & 0o111
    assert "uv export --frozen --no-dev" in text
    for flag in ("--strict", "--require-hashes", "--disable-pip"):
        assert flag in text
    assert 'exit "$status"' in text
    assert "|| true" not in text


def test_the_script_collects_every_locked_package(tmp_path: Path) -> None:
    result = run([str(SCRIPT)], env={"AUDIT_DRY_RUN": "1", "AUDIT_RECORD_DIR": str(tmp_path)})

    assert result.returncode == 0, report(result)
    assert "Dry run: would have audited" in result.stderr
    audited = int(result.stderr.split("would have audited ")[1].split()[0])
    assert audited > 50, "the production dependencies of uv.lock"
    assert json.loads((tmp_path / "pip-audit.json").read_text()) == {
        "dependencies": [],
        "fixes": [],
    }
    assert not (tmp_path / "uv.lock.sha256").exists(), "a dry run is not an audit"
