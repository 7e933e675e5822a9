#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Set up Slipway on a fresh Ubuntu 22.04/24.04 EC2 instance: Nginx in front, Gunicorn, the
# Celery worker and beat under supervisor, the database on RDS and Redis on ElastiCache.
# See docs/deploy/ec2.md.
#
#   sudo SLIPWAY_DOMAIN=api.example.com SLIPWAY_REPO=https://github.com/OWNER/slipway.git \
#        SLIPWAY_SSM_PREFIX=/slipway/production ./deploy/aws/ec2/setup.sh
#
# Secrets: with SLIPWAY_SSM_PREFIX, database_url, redis_url and secret_key are read from
# SSM Parameter Store (SecureString, the instance role needs ssm:GetParameter and
# kms:Decrypt); otherwise from DATABASE_URL / REDIS_URL in the environment (a local
# PostgreSQL/Redis is installed when they are missing). Safe to re-run.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../../vm/lib.sh
source "$here/../../vm/lib.sh"

require_root
: "${SLIPWAY_DOMAIN:?set SLIPWAY_DOMAIN to the public host name}"
: "${SLIPWAY_REPO:?set SLIPWAY_REPO to the git URL to deploy from}"

ssm_parameter() {
  aws ssm get-parameter --with-decryption --name "$SLIPWAY_SSM_PREFIX/$1" \
    --query Parameter.Value --output text
}

install_base_packages supervisor
create_service_user
install_uv

if [[ -n "${SLIPWAY_SSM_PREFIX:-}" ]]; then
  command -v aws >/dev/null 2>&1 || snap install aws-cli --classic
  log "reading secrets from SSM $SLIPWAY_SSM_PREFIX"
  DATABASE_URL="$(ssm_parameter database_url)"
  REDIS_URL="$(ssm_parameter redis_url)"
  write_credential secret_key "$(ssm_parameter secret_key)"
fi

checkout_code "$SLIPWAY_REPO" "${SLIPWAY_REF:-main}"
install_local_services
write_settings "$SLIPWAY_DOMAIN"
sync_environment
run_migrations

log "installing the supervisor programs"
install -m 0644 "$SLIPWAY_HOME/deploy/supervisor/slipway.conf" /etc/supervisor/conf.d/slipway.conf
systemctl enable --now supervisor
supervisorctl reread
supervisorctl update
wait_healthy

install_nginx_config "$SLIPWAY_DOMAIN" "${LETSENCRYPT_EMAIL:-}"
log "done: https://$SLIPWAY_DOMAIN/health/ready (deploy updates with deploy/vm/deploy.sh <ref>)"
