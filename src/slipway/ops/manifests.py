"""What `slipway doctor` reads from the deployment files next to the settings: the proxy's
upstream idle timeout (Nginx) and the pod's shutdown budget (a Kubernetes Deployment).

Only the few values the timeout checks need are extracted; when a file is absent the
platform defaults apply (Nginx upstream `keepalive_timeout` 60 s, Kubernetes
`terminationGracePeriodSeconds` 30 s with no preStop hook).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: Nginx's default for `keepalive_timeout` inside an `upstream` block (also the default idle
#: timeout of AWS ALB and GCP load balancers' backend side).
NGINX_UPSTREAM_KEEPALIVE_DEFAULT = 60.0
#: Kubernetes' default `terminationGracePeriodSeconds`.
K8S_GRACE_DEFAULT = 30.0

_NGINX_UNITS = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86_400,
    "w": 604_800,
    "M": 2_592_000,
    "y": 31_536_000,
}
_NGINX_TIME = re.compile(r"(\d+)(ms|s|m|h|d|w|M|y)?")
_UPSTREAM = re.compile(r"\bupstream\s+([^\s{]+)\s*\{")


def parse_nginx_time(text: str) -> float:
    """`60s`, `1m`, `1h30m`, `500ms` or a bare number of seconds."""
    compact = text.strip().strip("\"'").replace(" ", "")
    pos, total = 0, 0.0
    while pos < len(compact):
        match = _NGINX_TIME.match(compact, pos)
        if match is None:
            raise ValueError(f"not an Nginx time: {text!r}")
        total += int(match.group(1)) * _NGINX_UNITS[match.group(2) or "s"]
        pos = match.end()
    if not compact:
        raise ValueError("empty Nginx time")
    return total


def _strip_comments(text: str) -> str:
    # Comments start at a `#` at the beginning of a line or after whitespace; regexes and
    # quoted values in this config never contain such a `#`.
    return re.sub(r"(^|\s)#[^\n]*", r"\1", text)


def _block_body(text: str, open_brace: int) -> str:
    depth = 0
    for index in range(open_brace, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[open_brace + 1 : index]
    raise ValueError("unbalanced braces in the Nginx config")


@dataclass(frozen=True, slots=True)
class NginxUpstream:
    name: str
    #: False when the upstream keeps no idle connections (no `keepalive` directive).
    keepalive: bool
    idle_timeout: float


def nginx_upstreams(path: Path) -> list[NginxUpstream]:
    """The `upstream` blocks of an Nginx config file and their idle timeouts."""
    text = _strip_comments(path.read_text())
    upstreams: list[NginxUpstream] = []
    for match in _UPSTREAM.finditer(text):
        body = _block_body(text, match.end() - 1)
        timeout = re.search(r"(?:^|[;\s])keepalive_timeout\s+([^;]+);", body)
        upstreams.append(
            NginxUpstream(
                name=match.group(1),
                keepalive=re.search(r"(?:^|[;\s])keepalive\s+\d+\s*;", body) is not None,
                idle_timeout=(
                    parse_nginx_time(timeout.group(1))
                    if timeout
                    else NGINX_UPSTREAM_KEEPALIVE_DEFAULT
                ),
            )
        )
    return upstreams


@dataclass(frozen=True, slots=True)
class ShutdownBudget:
    """How long the orchestrator lets a pod stop, and how much of that preStop uses."""

    source: str
    grace_seconds: float
    prestop_seconds: float


def _prestop_seconds(container: dict[str, Any]) -> float:
    hook = ((container.get("lifecycle") or {}).get("preStop")) or {}
    sleep = hook.get("sleep")
    if isinstance(sleep, dict) and "seconds" in sleep:
        return float(sleep["seconds"])
    command = (hook.get("exec") or {}).get("command") or []
    words: list[str] = []
    for part in command:
        words.extend(shlex.split(str(part)) if " " in str(part) else [str(part)])
    for index, word in enumerate(words[:-1]):
        if Path(word).name == "sleep":
            try:
                return float(words[index + 1])
            except ValueError:
                continue
    return 0.0


def _is_web(container: dict[str, Any]) -> bool:
    words = [str(w) for w in (container.get("command") or []) + (container.get("args") or [])]
    return "serve" in words


def k8s_shutdown_budget(path: Path) -> ShutdownBudget | None:
    """The web Deployment's grace period and preStop delay, or None when the file has no
    Deployment running `slipway serve`."""
    for document in yaml.safe_load_all(path.read_text()):
        if not isinstance(document, dict) or document.get("kind") != "Deployment":
            continue
        pod = ((document.get("spec") or {}).get("template") or {}).get("spec") or {}
        web = [c for c in pod.get("containers") or [] if isinstance(c, dict) and _is_web(c)]
        if not web:
            continue
        return ShutdownBudget(
            source=f"{path} ({document.get('metadata', {}).get('name', 'Deployment')})",
            grace_seconds=float(pod.get("terminationGracePeriodSeconds", K8S_GRACE_DEFAULT)),
            prestop_seconds=_prestop_seconds(web[0]),
        )
    return None
