#!/usr/bin/env bash
# Release one image to a cluster: the migration Job first, then the Deployments, waiting
# for each; a rollout that does not become ready is undone. CI's deploy jobs run this.
#
#   deploy/k8s/deploy.sh <staging|production> <image:tag>               # migrate, roll out
#   deploy/k8s/deploy.sh <staging|production> <image:tag> --render      # print manifests
#   deploy/k8s/deploy.sh <staging|production> <image:tag> --no-migrate  # roll back to an
#                                                   older image (its code predates the schema)
#
# Needs kubectl >= 1.27 (its built-in kustomize v5) and, to apply, a KUBECONFIG whose
# context points at the cluster.
set -euo pipefail

usage() {
  echo "usage: $0 <staging|production> <image:tag> [--render] [--no-migrate]" >&2
  exit 2
}

overlay="${1:-}"
image_ref="${2:-}"
case "$overlay" in staging | production) ;; *) usage ;; esac
[[ "$image_ref" == *:* ]] || usage
shift 2
render=""
migrate=1
for option in "$@"; do
  case "$option" in
    --render) render=1 ;;
    --no-migrate) migrate="" ;;
    *) usage ;;
  esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
namespace="$( [[ "$overlay" == production ]] && echo slipway || echo slipway-staging )"
image="${image_ref%:*}"
tag="${image_ref##*:}"

# A throwaway kustomization on top of the overlay pins the image, so the tracked files
# never change during a deploy. It sits beside the overlays: kustomize refuses absolute
# paths to other kustomizations.
work="$(mktemp -d "$root/.release-XXXXXX")"
trap 'rm -rf "$work"' EXIT
cat >"$work/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../overlays/$overlay
images:
  - name: ghcr.io/OWNER/slipway
    newName: $image
    newTag: "$tag"
YAML
kubectl kustomize "$work" >"$work/manifests.yaml"

if [[ -n "$render" ]]; then
  cat "$work/manifests.yaml"
  exit 0
fi

log() { printf '==> %s\n' "$*" >&2; }
k() { kubectl --namespace "$namespace" "$@"; }

# A Job's pod template cannot change: the previous release's Job goes first.
k delete job slipway-migrate --ignore-not-found --wait=true
if [[ -n "$migrate" ]]; then
  log "migrating with $image_ref"
  k apply -f "$work/manifests.yaml" -l 'app.kubernetes.io/component in (shared,migrate)'
  if ! k wait --for=condition=complete job/slipway-migrate --timeout=600s; then
    k logs job/slipway-migrate --all-containers --tail=200 || true
    log "migration failed: nothing else was changed"
    exit 1
  fi
fi

log "rolling out"
if [[ -n "$migrate" ]]; then
  k apply -f "$work/manifests.yaml"
else
  # Everything but the Job: an older image must not run `slipway migrate` against a
  # schema that is ahead of it.
  k apply -f "$work/manifests.yaml" -l 'app.kubernetes.io/component!=migrate'
fi
for deployment in slipway-app slipway-worker slipway-beat; do
  if ! k rollout status "deployment/$deployment" --timeout=600s; then
    log "$deployment did not become ready: rolling back"
    k rollout undo "deployment/$deployment"
    k rollout status "deployment/$deployment" --timeout=600s || true
    exit 1
  fi
done
log "released $image_ref to $overlay"
