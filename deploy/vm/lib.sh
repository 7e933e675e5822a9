# shellcheck shell=bash
# Shared steps of the VM scripts (droplet-setup.sh, aws/ec2/setup.sh, deploy.sh).
# Sourced, never run. Targets Debian 12 and Ubuntu 22.04/24.04, run as root.
#
# Layout on the machine:
#   /opt/slipway                 the git checkout (root-owned: the service cannot change code)
#   /opt/slipway/.venv           `uv sync --frozen --no-dev`
#   /etc/slipway/slipway.env     non-secret settings (root:slipway 0640)
#   /etc/slipway/credentials/    one file per secret setting (SECRETS_DIR; root:slipway 0640)

SLIPWAY_HOME=/opt/slipway
SLIPWAY_ETC=/etc/slipway
SLIPWAY_CREDENTIALS="$SLIPWAY_ETC/credentials"
SLIPWAY_USER=slipway
SLIPWAY_UID=10001
# uv's own Python builds and cache outside /root, which the hardened units cannot see.
export UV_PYTHON_INSTALL_DIR=/opt/uv/python
export UV_CACHE_DIR=/var/cache/uv
export UV_VERSION="${UV_VERSION:-0.13.9}"

log() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

require_root() {
  [[ $(id -u) -eq 0 ]] || die "run as root (sudo $0)"
}

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

install_base_packages() {
  log "installing OS packages"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get upgrade -y
  apt_install ca-certificates curl git nginx certbot openssl "$@"
}

create_service_user() {
  if ! id -u "$SLIPWAY_USER" >/dev/null 2>&1; then
    log "creating user $SLIPWAY_USER ($SLIPWAY_UID)"
    useradd --system --uid "$SLIPWAY_UID" --user-group --home-dir "$SLIPWAY_HOME" \
      --no-create-home --shell /usr/sbin/nologin "$SLIPWAY_USER"
  fi
}

install_uv() {
  if command -v uv >/dev/null 2>&1; then
    return
  fi
  log "installing uv $UV_VERSION"
  curl -LsSf "https://astral.sh/uv/$UV_VERSION/install.sh" |
    env UV_INSTALL_DIR=/usr/local/bin UV_NO_MODIFY_PATH=1 sh
}

# checkout_code REPO REF: clone or update /opt/slipway at REF (branch, tag or sha).
checkout_code() {
  local repo="$1" ref="$2"
  if [[ ! -d "$SLIPWAY_HOME/.git" ]]; then
    log "cloning $repo"
    git clone --quiet "$repo" "$SLIPWAY_HOME"
  fi
  log "checking out $ref"
  git -C "$SLIPWAY_HOME" fetch --quiet --tags origin
  git -C "$SLIPWAY_HOME" checkout --quiet --detach "$ref" 2>/dev/null ||
    git -C "$SLIPWAY_HOME" checkout --quiet --detach "origin/$ref"
  git -C "$SLIPWAY_HOME" rev-parse HEAD >"$SLIPWAY_HOME/REVISION"
}

sync_environment() {
  log "installing the locked dependencies (uv sync --frozen --no-dev)"
  install -d -m 0755 "$UV_PYTHON_INSTALL_DIR" "$UV_CACHE_DIR"
  (cd "$SLIPWAY_HOME" && uv sync --frozen --no-dev)
  chmod -R a+rX "$UV_PYTHON_INSTALL_DIR" "$SLIPWAY_HOME"
}

random_secret() {
  # URL-safe: it may end up inside a database URL.
  openssl rand -base64 48 | tr '+/' '-_' | tr -d '=\n'
}

# write_credential NAME VALUE: created once, never overwritten (no accidental rotation).
write_credential() {
  local value="$2" path="$SLIPWAY_CREDENTIALS/$1"
  install -d -m 0750 -o root -g "$SLIPWAY_USER" "$SLIPWAY_CREDENTIALS"
  if [[ -s "$path" ]]; then
    return
  fi
  (umask 0027 && printf '%s' "$value" >"$path")
  chown root:"$SLIPWAY_USER" "$path"
  chmod 0640 "$path"
}

# Local PostgreSQL and Redis, when no DATABASE_URL / REDIS_URL was given.
install_local_services() {
  if [[ -z "${DATABASE_URL:-}" ]]; then
    log "installing a local PostgreSQL"
    apt_install postgresql
    systemctl enable --now postgresql
    if [[ ! -s "$SLIPWAY_CREDENTIALS/database_url" ]]; then
      local password
      password="$(random_secret)"
      runuser -u postgres -- psql -v ON_ERROR_STOP=1 -q \
        -c "CREATE ROLE slipway LOGIN PASSWORD '$password'" \
        -c "CREATE DATABASE slipway OWNER slipway"
      DATABASE_URL="postgresql+asyncpg://slipway:$password@127.0.0.1:5432/slipway"
    fi
  fi
  if [[ -z "${REDIS_URL:-}" ]]; then
    log "installing a local Redis"
    apt_install redis-server
    # Queues survive restarts (AOF); evict only keys with a TTL (cache, rate limits),
    # never the job queues.
    sed -i -E 's/^#? *appendonly .*/appendonly yes/; s/^#? *maxmemory-policy .*/maxmemory-policy volatile-lru/' \
      /etc/redis/redis.conf
    systemctl enable redis-server
    systemctl restart redis-server
    REDIS_URL="redis://127.0.0.1:6379/0"
  fi
}

write_settings() {
  local domain="$1" workers
  install -d -m 0755 "$SLIPWAY_ETC"
  # Async workers: one per core is the starting point (docs/deploy/vm-systemd.md).
  workers="$(nproc)"
  if [[ ! -f "$SLIPWAY_ETC/slipway.env" ]]; then
    log "writing $SLIPWAY_ETC/slipway.env"
    cat >"$SLIPWAY_ETC/slipway.env" <<EOF
# Slipway settings (docs/configuration.md). Secrets are not here: they are files in
# $SLIPWAY_CREDENTIALS, read through SECRETS_DIR.
ENVIRONMENT=production
LOG_FORMAT=json
LOG_LEVEL=INFO
ALLOWED_HOSTS=$domain,localhost
PUBLIC_BASE_URL=https://$domain
FORWARDED_ALLOW_IPS=127.0.0.1
WEB_CONCURRENCY=$workers
GRACEFUL_TIMEOUT=20
KEEPALIVE_TIMEOUT=75
EOF
    chown root:"$SLIPWAY_USER" "$SLIPWAY_ETC/slipway.env"
    chmod 0640 "$SLIPWAY_ETC/slipway.env"
  fi
  [[ -n "${DATABASE_URL:-}" ]] && write_credential database_url "$DATABASE_URL"
  [[ -n "${REDIS_URL:-}" ]] && write_credential redis_url "$REDIS_URL"
  write_credential secret_key "$(random_secret)"
  [[ -s "$SLIPWAY_CREDENTIALS/database_url" ]] || die "no DATABASE_URL: set it or let the script install PostgreSQL"
  install -d -m 0750 -o "$SLIPWAY_USER" -g "$SLIPWAY_USER" /var/log/slipway
}

# Nginx from the repository's config (deploy/nginx), with the one per-target file,
# slipway/upstream.conf, pointed at the local Gunicorn instead of the Compose service.
install_nginx_config() {
  local domain="$1" email="${2:-}"
  log "configuring Nginx for $domain"
  install -d -m 0755 /etc/nginx/slipway /etc/nginx/certs /var/www/certbot
  install -m 0644 "$SLIPWAY_HOME/deploy/nginx/nginx.conf" /etc/nginx/nginx.conf
  install -m 0644 "$SLIPWAY_HOME"/deploy/nginx/slipway/*.conf /etc/nginx/slipway/
  printf '%s\n' \
    '# Written by deploy/vm/lib.sh: Gunicorn on loopback (Compose resolves the app service).' \
    'server 127.0.0.1:8000 max_fails=3 fail_timeout=10s;' >/etc/nginx/slipway/upstream.conf
  rm -f /etc/nginx/sites-enabled/default
  if [[ ! -s /etc/nginx/certs/fullchain.pem ]]; then
    # A self-signed certificate lets Nginx start; Let's Encrypt replaces it below.
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=$domain" \
      -keyout /etc/nginx/certs/privkey.pem -out /etc/nginx/certs/fullchain.pem 2>/dev/null
    chmod 0600 /etc/nginx/certs/privkey.pem
  fi
  nginx -t
  systemctl enable nginx
  systemctl restart nginx
  if [[ -n "$email" ]]; then
    # HTTP-01 through the running Nginx (it serves /.well-known/acme-challenge/ from
    # /var/www/certbot); renewals reload it.
    certbot certonly --webroot -w /var/www/certbot --non-interactive --agree-tos -m "$email" \
      -d "$domain" --deploy-hook "systemctl reload nginx"
    ln -sf "/etc/letsencrypt/live/$domain/fullchain.pem" /etc/nginx/certs/fullchain.pem
    ln -sf "/etc/letsencrypt/live/$domain/privkey.pem" /etc/nginx/certs/privkey.pem
    nginx -t
    systemctl reload nginx
  else
    log "no LETSENCRYPT_EMAIL: Nginx serves a self-signed certificate"
  fi
}

# run_migrations: `slipway migrate` as the service user, with its settings and secrets.
run_migrations() {
  log "migrating the database"
  runuser -u "$SLIPWAY_USER" -- env SECRETS_DIR="$SLIPWAY_CREDENTIALS" \
    "$SLIPWAY_HOME/deploy/vm/slipway-env" "$SLIPWAY_HOME/.venv/bin/slipway" migrate
}

# wait_healthy: the readiness endpoint through the local server, bounded.
wait_healthy() {
  local attempt
  for attempt in $(seq 1 30); do
    if curl -fsS -H 'Host: localhost' http://127.0.0.1:8000/health/ready >/dev/null; then
      log "healthy after $attempt attempt(s)"
      return 0
    fi
    sleep 2
  done
  die "Slipway did not become ready on 127.0.0.1:8000"
}
