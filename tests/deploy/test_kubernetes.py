"""deploy/k8s: both overlays rendered by kustomize (kubectl's built-in, through
deploy/k8s/deploy.sh --render, the same step CI deploys with), validated by
kubernetes-validate against a pinned Kubernetes version in strict mode, then read back for
what a zero-downtime rollout needs: probe paths, the preStop/grace-period arithmetic,
maxUnavailable 0, the security context, autoscaling and disruption budget, and references
that resolve.
"""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy._tools import (
    BEAT,
    DEPLOY,
    IMAGE,
    MIGRATE,
    WEB_UVICORN,
    WORKER,
    load_yaml_all,
    python_tool,
    report,
    run,
    settings_from,
    unknown_settings,
    write_secrets,
)
from tests.support.process import require_or_skip

pytestmark = pytest.mark.deploy

K8S = DEPLOY / "k8s"
#: The API version the manifests are validated against (and documented for): the preStop
#: `sleep` action needs 1.30+.
KUBERNETES_VERSION = "1.32.0"
MIN_KUBECTL = (1, 27)  # kustomize v5 (the `labels` field)
OVERLAYS = ("staging", "production")
TAG = "0123456789abcdef0123456789abcdef01234567"
MIGRATE_SELECTOR = {"shared", "migrate"}  # deploy.sh: component in (shared,migrate)


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        require_or_skip("kubectl is not installed (it renders the kustomize overlays)")
    result = run([path, "version", "--client", "-o", "yaml"], timeout=30)
    client = yaml.safe_load(result.stdout)["clientVersion"]
    version = (int(client["major"]), int(re.match(r"\d+", client["minor"]).group()))  # type: ignore[union-attr]
    if version < MIN_KUBECTL:
        require_or_skip(f"kubectl {version} is too old; kustomize v5 needs {MIN_KUBECTL}+")
    return path


def render(overlay: str) -> str:
    kubectl()
    result = run([str(K8S / "deploy.sh"), overlay, f"{IMAGE}:{TAG}", "--render"], timeout=60)
    assert result.returncode == 0, report(result)
    return result.stdout


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param, render(request.param)


@pytest.fixture(scope="module")
def production() -> dict[tuple[str, str], dict[str, Any]]:
    return index(load_yaml_all(render("production")))


def index(documents: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents}


def one(
    resources: dict[tuple[str, str], dict[str, Any]], kind: str, prefix: str = ""
) -> dict[str, Any]:
    matches = [doc for (k, name), doc in resources.items() if k == kind and name.startswith(prefix)]
    assert len(matches) == 1, f"{kind} {prefix}: {len(matches)} found"
    return matches[0]


def pod_spec(resource: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = resource["spec"]["template"]["spec"]
    return spec


def config(resources: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = one(resources, "ConfigMap", "slipway-config")["data"]
    return data


def validate(path: Path) -> Any:
    return run(
        [
            python_tool("kubernetes-validate"),
            "--strict",
            "--quiet",
            "-k",
            KUBERNETES_VERSION,
            str(path),
        ]
    )


# --- the real validators ---------------------------------------------------------------


def test_overlays_validate_against_kubernetes(rendered: tuple[str, str], tmp_path: Path) -> None:
    overlay, manifests = rendered
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(manifests, encoding="utf-8")
    result = validate(path)
    assert result.returncode == 0, report(result)
    kinds = {doc["kind"] for doc in load_yaml_all(manifests)}
    assert {
        "Deployment",
        "Job",
        "Service",
        "Ingress",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "ServiceAccount",
    } <= kinds


def test_validator_rejects_a_misspelt_field(
    production: dict[tuple[str, str], dict[str, Any]], tmp_path: Path
) -> None:
    """The check can fail: strict mode reports an unknown field."""
    app = copy.deepcopy(production["Deployment", "slipway-app"])
    pod_spec(app)["terminationGracePeriodSecond"] = 30
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(app), encoding="utf-8")
    result = validate(path)
    assert result.returncode != 0
    assert "terminationGracePeriodSecond" in result.stdout + result.stderr


def test_every_container_runs_the_pinned_image(rendered: tuple[str, str]) -> None:
    """CI pins the commit it built: no `latest` reaches a cluster."""
    _, manifests = rendered
    images = [
        container["image"]
        for doc in load_yaml_all(manifests)
        if doc["kind"] in {"Deployment", "Job"}
        for container in pod_spec(doc)["containers"]
    ]
    assert images
    assert set(images) == {f"{IMAGE}:{TAG}"}


# --- zero-downtime arithmetic ------------------------------------------------------------


def test_grace_period_covers_prestop_and_drain(
    production: dict[tuple[str, str], dict[str, Any]],
) -> None:
    """SIGKILL comes terminationGracePeriodSeconds after the pod starts terminating; the
    preStop sleep and then the app's drain (GRACEFUL_TIMEOUT) both have to fit."""
    app = production["Deployment", "slipway-app"]
    spec = pod_spec(app)
    (container,) = spec["containers"]
    prestop = container["lifecycle"]["preStop"]
    if "sleep" in prestop:
        prestop_seconds = int(prestop["sleep"]["seconds"])
    else:
        match = re.search(r"sleep\s+(\d+)", " ".join(prestop["exec"]["command"]))
        assert match, prestop
        prestop_seconds = int(match.group(1))
    graceful = int(config(production)["GRACEFUL_TIMEOUT"])
    assert prestop_seconds >= 5, "endpoint removal needs a few seconds to propagate"
    assert spec["terminationGracePeriodSeconds"] > prestop_seconds + graceful


def test_rollout_never_drops_capacity(production: dict[tuple[str, str], dict[str, Any]]) -> None:
    app = production["Deployment", "slipway-app"]
    strategy = app["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert strategy["rollingUpdate"]["maxSurge"] not in (0, "0%")


def test_probes(production: dict[tuple[str, str], dict[str, Any]]) -> None:
    app = production["Deployment", "slipway-app"]
    (container,) = pod_spec(app)["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["http"] == int(config(production)["PORT"])
    expected = {
        "readinessProbe": "/health/ready",
        "livenessProbe": "/health/live",
        "startupProbe": "/health/live",
    }
    for probe, path in expected.items():
        http = container[probe]["httpGet"]
        assert http["path"] == path, probe
        assert ports.get(http["port"], http["port"]) == ports["http"], probe
        # The kubelet's Host would be the pod IP, which ALLOWED_HOSTS does not list.
        host = {h["name"]: h["value"] for h in http.get("httpHeaders", [])}.get("Host")
        assert host in config(production)["ALLOWED_HOSTS"].split(","), probe
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30, "boot budget"
    assert int(config(production)["KEEPALIVE_TIMEOUT"]) > 60, (
        "above ingress-nginx's upstream keep-alive"
    )


def test_processes(production: dict[tuple[str, str], dict[str, Any]]) -> None:
    def argv(resource: dict[str, Any]) -> list[str]:
        (container,) = pod_spec(resource)["containers"]
        return list(container.get("command", [])) + list(container.get("args", []))

    assert argv(production["Deployment", "slipway-app"]) == WEB_UVICORN
    assert argv(production["Deployment", "slipway-worker"]) == WORKER
    beat = production["Deployment", "slipway-beat"]
    assert argv(beat) == BEAT
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate", "two schedulers must never overlap"
    job = production["Job", "slipway-migrate"]
    assert argv(job) == MIGRATE
    assert pod_spec(job)["restartPolicy"] == "Never"
    worker_grace = pod_spec(production["Deployment", "slipway-worker"])[
        "terminationGracePeriodSeconds"
    ]
    assert worker_grace >= 150, "Celery's warm shutdown waits for running tasks (JOBS_TIME_LIMIT)"


def test_pods_are_locked_down(production: dict[tuple[str, str], dict[str, Any]]) -> None:
    for (kind, name), resource in production.items():
        if kind not in {"Deployment", "Job"}:
            continue
        spec = pod_spec(resource)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == 10001, name
        assert spec["automountServiceAccountToken"] is False, name
        mounts_by_volume = {}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert container["resources"]["requests"], name
            assert container["resources"]["limits"], name
            mounts_by_volume = {
                mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]
            }
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        assert "emptyDir" in volumes[mounts_by_volume["/tmp"]], f"{name}: /tmp must be writable"


def test_metrics_directory_is_a_writable_volume(
    production: dict[tuple[str, str], dict[str, Any]],
) -> None:
    spec = pod_spec(production["Deployment", "slipway-app"])
    (container,) = spec["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    assert "emptyDir" in volumes[mounts[env["PROMETHEUS_MULTIPROC_DIR"]]]


# --- traffic, scaling, disruption --------------------------------------------------------


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_service_and_ingress_reach_the_web_pods(
    production: dict[tuple[str, str], dict[str, Any]],
) -> None:
    app = production["Deployment", "slipway-app"]
    labels = app["spec"]["template"]["metadata"]["labels"]
    (container,) = pod_spec(app)["containers"]
    port_names = {port["name"] for port in container["ports"]}
    service = production["Service", "slipway"]
    assert selects(service["spec"]["selector"], labels)
    assert not selects(
        service["spec"]["selector"],
        production["Deployment", "slipway-worker"]["spec"]["template"]["metadata"]["labels"],
    )
    service_ports = {port["name"]: port for port in service["spec"]["ports"]}
    for port in service_ports.values():
        assert port["targetPort"] in port_names

    ingress = production["Ingress", "slipway"]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    annotations = ingress["metadata"]["annotations"]
    body = annotations["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert re.fullmatch(r"\d+[mk]", body), body
    size = int(body[:-1]) * (1024 * 1024 if body.endswith("m") else 1024)
    from slipway.platform.settings import Settings

    assert size >= Settings.model_fields["max_body_size"].default, "the app's 413 must win"
    # WebSockets: idle connections outlive the default 60 s proxy timeouts.
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    backends = [
        path["backend"]["service"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    for backend in backends:
        assert backend["name"] == "slipway"
        assert backend["port"]["name"] == "http", "only the app port is public, never metrics"
    assert ingress["spec"]["tls"][0]["hosts"][0] == ingress["spec"]["rules"][0]["host"]
    assert ingress["spec"]["rules"][0]["host"] in config(production)["ALLOWED_HOSTS"].split(",")


def test_autoscaling_and_disruption_budget(
    production: dict[tuple[str, str], dict[str, Any]],
) -> None:
    app = production["Deployment", "slipway-app"]
    labels = app["spec"]["template"]["metadata"]["labels"]
    hpa = production["HorizontalPodAutoscaler", "slipway-app"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "slipway-app",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    (container,) = pod_spec(app)["containers"]
    assert container["resources"]["requests"]["cpu"], "CPU utilisation is relative to the request"

    pdb = production["PodDisruptionBudget", "slipway-app"]
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert (
        pdb["spec"].get("maxUnavailable", 0) == 1
        or pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    )


# --- configuration and secrets -------------------------------------------------------------


def test_config_and_secret_references_resolve(rendered: tuple[str, str]) -> None:
    _, manifests = rendered
    resources = index(load_yaml_all(manifests))
    config_maps = {name for kind, name in resources if kind == "ConfigMap"}
    settings = config(resources)
    for (kind, name), resource in resources.items():
        if kind not in {"Deployment", "Job"}:
            continue
        spec = pod_spec(resource)
        assert (("ServiceAccount", spec["serviceAccountName"])) in resources, name
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        for container in spec["containers"]:
            for source in container["envFrom"]:
                assert source["configMapRef"]["name"] in config_maps, name
            mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
            secrets_mount = mounts[settings["SECRETS_DIR"]]
            assert secrets_mount["readOnly"] is True
            assert volumes[secrets_mount["name"]]["secret"]["secretName"] == "slipway-secrets", name


def test_migration_job_is_applied_with_what_it_needs(
    production: dict[tuple[str, str], dict[str, Any]],
) -> None:
    """deploy.sh applies only `component in (shared,migrate)` before waiting for the Job:
    the Job's ConfigMap and ServiceAccount must be in that selection."""
    selected = {
        key
        for key, doc in production.items()
        if doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") in MIGRATE_SELECTOR
    }
    job = production["Job", "slipway-migrate"]
    assert ("Job", "slipway-migrate") in selected
    spec = pod_spec(job)
    assert ("ServiceAccount", spec["serviceAccountName"]) in selected
    for container in spec["containers"]:
        for source in container["envFrom"]:
            assert ("ConfigMap", source["configMapRef"]["name"]) in selected
    assert not any(kind == "Deployment" for kind, _ in selected), "nothing rolls before the Job"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_accept_the_configuration(
    overlay: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap plus the documented Secret keys, mounted as files, make settings the
    app's production guard accepts (staging runs the same checks' inputs)."""
    resources = index(load_yaml_all(render(overlay)))
    data = config(resources)
    assert unknown_settings(set(data)) == set()
    secrets = write_secrets(tmp_path / "secrets", ["secret_key", "database_url", "redis_url"])
    settings = settings_from(monkeypatch, data, secrets_dir=secrets)
    assert settings.environment.value == overlay
    assert settings.database_url.startswith("postgresql+asyncpg://")
    assert settings.redis_url
    assert settings.production_problems() == []


def test_deploy_script_refuses_bad_arguments() -> None:
    kubectl()
    for args in (
        ["qa", f"{IMAGE}:{TAG}"],
        ["production", IMAGE],
        ["production"],
        ["production", f"{IMAGE}:{TAG}", "--bogus"],
    ):
        result = run([str(K8S / "deploy.sh"), *args, "--render"], timeout=30)
        assert result.returncode == 2, report(result)
        assert "usage:" in result.stderr
    assert not list(K8S.glob(".release-*")), "the temporary kustomization is removed"
