"""GitHub Actions: every workflow passes actionlint (which also runs shellcheck on the
`run:` scripts when it is installed) and the SchemaStore workflow schema; Dependabot's
config passes its schema; then the pipeline's promises: tests against PostgreSQL and Redis
service containers the harness is pointed at, one image pushed to GHCR tagged with the
commit sha with a layer cache, staging from `develop`, production from `main` behind an
environment and followed by a health check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy._tools import (
    ROOT,
    load_yaml,
    os_tool,
    python_tool,
    report,
    run,
    schema_errors,
    vendored_schema,
)

pytestmark = pytest.mark.deploy

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
CI_CD = ROOT / ".github" / "workflows" / "ci-cd.yml"
DEPENDABOT = ROOT / ".github" / "dependabot.yml"


def load_workflow(path: Path) -> dict[str, Any]:
    # YAML 1.1 reads the `on:` key as True; GitHub reads it as "on".
    document: dict[str, Any] = load_yaml(path)
    if True in document:
        document["on"] = document.pop(True)
    return document


@pytest.fixture(scope="module")
def pipeline() -> dict[str, Any]:
    return load_workflow(CI_CD)


def actionlint(*paths: Path) -> Any:
    return run([python_tool("actionlint"), "-no-color", *map(str, paths)])


def steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [step for step in job["steps"] if str(step.get("uses", "")).startswith(f"{action}@")]


def run_text(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in job["steps"])


# --- the real validators ---------------------------------------------------------------


def test_actionlint() -> None:
    os_tool("shellcheck", "shellcheck")  # actionlint checks `run:` scripts with it
    result = actionlint(*WORKFLOWS)
    assert result.returncode == 0, report(result)


def test_actionlint_can_fail(tmp_path: Path) -> None:
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    broken = (
        CI_CD.read_text(encoding="utf-8")
        .replace("needs: [lint, test]", "needs: [lint, tests]")
        .replace("${{ github.sha }}", "${{ github.shaa }}", 1)
    )
    (workflows / "ci-cd.yml").write_text(broken, encoding="utf-8")
    result = actionlint(workflows / "ci-cd.yml")
    assert result.returncode != 0
    assert '"tests"' in result.stdout
    assert "shaa" in result.stdout


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_schema(path: Path) -> None:
    assert schema_errors(load_workflow(path), vendored_schema("github-workflows")) == []


def test_dependabot_schema() -> None:
    assert schema_errors(load_yaml(DEPENDABOT), vendored_schema("dependabot")) == []


def test_dependabot_covers_python_actions_and_images() -> None:
    ecosystems = {update["package-ecosystem"] for update in load_yaml(DEPENDABOT)["updates"]}
    assert ecosystems & {"uv", "pip"}
    assert {"github-actions", "docker"} <= ecosystems


# --- the pipeline's promises --------------------------------------------------------------


def test_lint_and_type_check(pipeline: dict[str, Any]) -> None:
    commands = run_text(pipeline["jobs"]["lint"])
    for command in ("ruff check", "ruff format --check", "mypy"):
        assert command in commands


def test_tests_use_service_containers(pipeline: dict[str, Any]) -> None:
    job = pipeline["jobs"]["test"]
    services = job["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    assert "--health-cmd" in services["postgres"]["options"]
    env = job["env"]
    assert env["CI"] == "true", "a missing service must fail the run, not skip tests"
    postgres_port = services["postgres"]["ports"][0].split(":")[0]
    redis_port = services["redis"]["ports"][0].split(":")[0]
    password = services["postgres"]["env"]["POSTGRES_PASSWORD"]
    assert (
        env["TEST_DATABASE_URL"]
        == f"postgresql://postgres:{password}@localhost:{postgres_port}/postgres"
    )
    assert env["TEST_REDIS_URL"] == f"redis://localhost:{redis_port}/0"
    # The variables the harness reads (tests/support/plugin.py).
    plugin = (ROOT / "tests" / "support" / "plugin.py").read_text(encoding="utf-8")
    assert '"TEST_DATABASE_URL"' in plugin
    assert '"TEST_REDIS_URL"' in plugin
    assert "./scripts/test" in run_text(job)


def test_image_build(pipeline: dict[str, Any]) -> None:
    job = pipeline["jobs"]["build"]
    assert set(job["needs"]) == {"lint", "test"}
    assert job["permissions"]["packages"] == "write"
    assert steps_using(job, "docker/setup-buildx-action")
    (login,) = steps_using(job, "docker/login-action")
    assert login["with"]["registry"] == "ghcr.io"
    (build,) = steps_using(job, "docker/build-push-action")
    options = build["with"]
    assert options["cache-from"].startswith("type=")
    assert "mode=max" in options["cache-to"]
    assert "push" in options
    (meta,) = steps_using(job, "docker/metadata-action")
    assert "type=sha,format=long,prefix=" in meta["with"]["tags"], "tagged with the commit sha"
    assert "ghcr.io/" in run_text(job)


def test_deployments(pipeline: dict[str, Any]) -> None:
    jobs = pipeline["jobs"]
    staging, production = jobs["deploy-staging"], jobs["deploy-production"]
    assert "refs/heads/develop" in staging["if"]
    assert "refs/heads/main" not in staging["if"]
    assert "refs/heads/main" in production["if"]
    assert "refs/heads/develop" not in production["if"]
    assert staging["environment"]["name"] == "staging"
    # Required reviewers on this environment are the approval gate.
    assert production["environment"]["name"] == "production"
    for job in (staging, production):
        assert job["needs"] == "build"
        names = [step.get("name", "") for step in job["steps"]]
        deploy = names.index("Migrate, then roll out")
        health = names.index("Health check")
        assert deploy < health
        health_step = job["steps"][health]
        assert "/health/ready" in health_step["run"]
        assert "--fail" in health_step["run"]
        deploy_step = job["steps"][deploy]
        assert "deploy/k8s/deploy.sh" in deploy_step["run"]
        assert "github.sha" in deploy_step["env"]["IMAGE"], "the image built from this commit"
    rollback = production["steps"][-1]
    assert rollback["if"] == "failure()"
    assert "rollout undo" in rollback["run"]


def test_deploy_script_exists_and_is_executable() -> None:
    script = ROOT / "deploy" / "k8s" / "deploy.sh"
    assert script.stat().st_mode & 0o111


def test_workflow_yaml_has_no_duplicate_keys() -> None:
    """PyYAML keeps the last of duplicate keys silently; GitHub rejects the file."""

    class Strict(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        keys = [loader.construct_object(key) for key, _ in node.value]  # type: ignore[no-untyped-call]
        duplicates = {key for key in keys if keys.count(key) > 1}
        assert not duplicates, f"duplicate keys {duplicates} at line {node.start_mark.line + 1}"
        return loader.construct_mapping(node)

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    for path in [*WORKFLOWS, DEPENDABOT]:
        yaml.load(path.read_text(encoding="utf-8"), Loader=Strict)
