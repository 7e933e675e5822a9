#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Set up Slipway on a fresh Ubuntu 22.04/24.04 or Debian 12 VM (a DigitalOcean Droplet, or
# any VM with systemd): Nginx in front, Gunicorn under systemd, Celery worker and beat,
# PostgreSQL and Redis local unless DATABASE_URL / REDIS_URL point elsewhere.
# See docs/deploy/vm-systemd.md and docs/deploy/digitalocean.md.
#
#   sudo SLIPWAY_DOMAIN=api.example.com SLIPWAY_REPO=https://github.com/OWNER/slipway.git \
#        LETSENCRYPT_EMAIL=ops@example.com ./deploy/vm/droplet-setup.sh
#
# Optional: SLIPWAY_REF (default main), DATABASE_URL, REDIS_URL, LETSENCRYPT_EMAIL (without
# it the certificate is self-signed). Safe to re-run: secrets and settings are kept.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"

require_root
: "${SLIPWAY_DOMAIN:?set SLIPWAY_DOMAIN to the public host name}"
: "${SLIPWAY_REPO:?set SLIPWAY_REPO to the git URL to deploy from}"

install_base_packages ufw
create_service_user
install_uv
checkout_code "$SLIPWAY_REPO" "${SLIPWAY_REF:-main}"
install_local_services
write_settings "$SLIPWAY_DOMAIN"
sync_environment

log "installing the systemd units"
install -m 0644 "$SLIPWAY_HOME"/deploy/systemd/slipway*.service /etc/systemd/system/
systemctl daemon-reload
# The one-shot unit runs `slipway migrate`; `start` waits for it and fails if it fails.
systemctl start slipway-migrate.service
systemctl enable --now slipway.service slipway-worker.service slipway-beat.service
wait_healthy

install_nginx_config "$SLIPWAY_DOMAIN" "${LETSENCRYPT_EMAIL:-}"

ufw allow OpenSSH
ufw allow 'Nginx Full'
ufw --force enable
log "done: https://$SLIPWAY_DOMAIN/health/ready (deploy updates with deploy/vm/deploy.sh <ref>)"
