#!/usr/bin/env bash
# Create the secret files compose.prod.yml mounts (./secrets/*), once per host.
# Existing files are kept, so re-running never rotates a secret by accident.
#
#   deploy/compose/init-secrets.sh [SECRETS_DIR]     # default: ./secrets
#
# The directory is 0700 (no other host user can reach the files); the files are 0444
# because Compose bind-mounts them as they are, and the containers run as different users
# (the app as 10001, PostgreSQL as 70, Grafana as 472).
set -euo pipefail

dir="${1:-secrets}"
install -d -m 0700 "$dir"

random() {
  # 48 random bytes, URL-safe base64 without padding: safe inside a database URL.
  head -c 48 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'
}

write() {
  local name="$1" value="$2"
  if [[ -s "$dir/$name" ]]; then
    echo "kept    $dir/$name"
    return
  fi
  (umask 0222 && printf '%s' "$value" >"$dir/$name")
  echo "created $dir/$name"
}

if [[ -s "$dir/postgres_password" ]]; then
  pg_password="$(cat "$dir/postgres_password")"
else
  pg_password="$(random)"
fi
write postgres_password "$pg_password"
write database_url "postgresql+asyncpg://slipway:${pg_password}@db:5432/slipway"
write secret_key "$(random)"
write grafana_admin_password "$(random)"
