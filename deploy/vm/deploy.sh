#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Deploy another revision on a VM set up by droplet-setup.sh (systemd) or
# aws/ec2/setup.sh (supervisor), with no dropped requests:
#   code at REF -> locked dependencies -> `slipway migrate` -> Gunicorn SIGHUP (new workers
#   start, old ones drain) -> worker/beat restart -> readiness check.
# If the new revision never becomes ready, the previous one is put back the same way but
# without migrating: its code predates the schema, and expand/contract migrations keep it
# working there.
#
#   sudo ./deploy/vm/deploy.sh <branch, tag or sha>
#   sudo ./deploy/vm/deploy.sh "$(cat /opt/slipway/REVISION.previous)" --no-migrate  # roll back
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"

require_root
ref="${1:?usage: deploy.sh <git ref> [--no-migrate]}"
migrate=1
[[ "${2:-}" == --no-migrate ]] && migrate=""
repo="$(git -C "$SLIPWAY_HOME" remote get-url origin)"
previous="$(cat "$SLIPWAY_HOME/REVISION")"

reload_services() {
  if [[ -f /etc/systemd/system/slipway.service ]]; then
    install -m 0644 "$SLIPWAY_HOME"/deploy/systemd/slipway*.service /etc/systemd/system/
    systemctl daemon-reload
    systemctl reload slipway.service
    systemctl restart slipway-worker.service slipway-beat.service
  else
    install -m 0644 "$SLIPWAY_HOME/deploy/supervisor/slipway.conf" /etc/supervisor/conf.d/slipway.conf
    supervisorctl reread >/dev/null
    supervisorctl update
    supervisorctl signal HUP slipway:slipway-web
    supervisorctl restart slipway:slipway-worker slipway:slipway-beat
  fi
}

# release REF [migrate]: put REF in place and restart onto it.
release() {
  checkout_code "$repo" "$1"
  sync_environment
  if [[ -n "${2:-}" ]]; then
    run_migrations
  fi
  reload_services
  # SIGHUP returns at once; give the old workers time to hand over before probing.
  sleep 5
  wait_healthy
}

echo "$previous" >"$SLIPWAY_HOME/REVISION.previous"
# A subshell run as a plain command keeps errexit working inside it (under `if` or `!` bash
# would ignore every failure in the release steps).
set +e
(set -e; release "$ref" "$migrate")
status=$?
set -e
if ((status != 0)); then
  log "revision $ref failed; rolling back to $previous"
  release "$previous" ""
  exit 1
fi
log "deployed $(cat "$SLIPWAY_HOME/REVISION")"
