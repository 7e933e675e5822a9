#!/bin/sh
# Container entrypoint: optionally migrate, then become the server (exec), so the server is
# PID 1 and receives `docker stop`'s SIGTERM itself.
#
#   MIGRATE_ON_START=1  run `slipway migrate` first. It holds a PostgreSQL advisory lock, so
#                       replicas starting together migrate one at a time; still prefer a
#                       single release step (Compose `migrate` service, Kubernetes Job,
#                       Heroku release phase) and leave this off (ERRATA).
#
# Any command works: `docker run IMAGE slipway worker`, `docker run IMAGE slipway migrate`.
set -eu

if [ "$#" -eq 0 ]; then
  set -- slipway serve --server gunicorn
fi

case "${MIGRATE_ON_START:-0}" in
  1 | true | TRUE | yes)
    echo "docker-entrypoint: MIGRATE_ON_START is set: slipway migrate" >&2
    slipway migrate
    ;;
  0 | false | FALSE | no | "") ;;
  *)
    echo "docker-entrypoint: MIGRATE_ON_START must be 1 or 0, got '${MIGRATE_ON_START}'" >&2
    exit 2
    ;;
esac

exec "$@"
