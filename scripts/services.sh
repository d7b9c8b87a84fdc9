#!/usr/bin/env bash
# Private MariaDB (binlog on, ROW, FULL image, FULL metadata) and private Redis for
# primer-cache: own data dirs under .run/ (gitignored), spare ports, idempotent.
#
#   scripts/services.sh start   start (or reuse) both, load the schema, write .run/services.env
#   scripts/services.sh stop    stop what this script started (by the PIDs it recorded)
#   scripts/services.sh status  print what runs
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="$ROOT/.run"
DB_DIR="$RUN/mariadb"
REDIS_DIR="$RUN/redis"
ENV_FILE="$RUN/services.env"
DB_NAME="${PRIMER_DB_NAME:-megamind}"

log() { printf 'services: %s\n' "$*" >&2; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

free_port() {
  python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

need_packages() {
  local missing=()
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
  command -v mariadb-install-db >/dev/null 2>&1 || missing+=(mariadb-server)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  # promtool (package prometheus) checks and unit-tests deploy/monitoring's alerting rules
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # policy-rc.d keeps the package from starting its own system-wide server
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
  fi
}

mariadbd_bin() { command -v mariadbd 2>/dev/null || echo /usr/sbin/mariadbd; }

start_mariadb() {
  if alive "$DB_DIR/pid"; then
    DB_PORT="$(cat "$DB_DIR/port")"
    log "MariaDB already running on port $DB_PORT (pid $(cat "$DB_DIR/pid"))"
    return
  fi
  mkdir -p "$DB_DIR"
  if [ ! -d "$DB_DIR/data/mysql" ]; then
    log "initialising MariaDB data dir $DB_DIR/data"
    mariadb-install-db --no-defaults --datadir="$DB_DIR/data" --user="$(id -un)" \
      --auth-root-authentication-method=normal >"$DB_DIR/install.log" 2>&1 \
      || { cat "$DB_DIR/install.log" >&2; exit 1; }
  fi
  DB_PORT="$(free_port)"
  echo "$DB_PORT" >"$DB_DIR/port"
  "$(mariadbd_bin)" --no-defaults --datadir="$DB_DIR/data" --socket="$DB_DIR/sock" \
    --port="$DB_PORT" --bind-address=127.0.0.1 --user="$(id -un)" --skip-name-resolve \
    --pid-file="$DB_DIR/pid" --log-error="$DB_DIR/error.log" \
    --log-bin="$DB_DIR/data/binlog" --binlog-format=ROW --binlog-row-image=FULL \
    --binlog-row-metadata=FULL --server-id=1 --max-connections=500 \
    --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=2 --sync-binlog=0 \
    >/dev/null 2>&1 &
  for _ in $(seq 1 300); do
    if mariadb --no-defaults -uroot --socket="$DB_DIR/sock" -e 'SELECT 1' >/dev/null 2>&1; then
      log "MariaDB up on 127.0.0.1:$DB_PORT"
      return
    fi
    sleep 0.1
  done
  log "MariaDB did not start; see $DB_DIR/error.log"
  tail -20 "$DB_DIR/error.log" >&2 || true
  exit 1
}

start_redis() {
  if alive "$REDIS_DIR/pid"; then
    REDIS_PORT="$(cat "$REDIS_DIR/port")"
    log "Redis already running on port $REDIS_PORT (pid $(cat "$REDIS_DIR/pid"))"
    return
  fi
  mkdir -p "$REDIS_DIR"
  REDIS_PORT="$(free_port)"
  echo "$REDIS_PORT" >"$REDIS_DIR/port"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$REDIS_DIR" --pidfile "$REDIS_DIR/pid" --logfile "$REDIS_DIR/redis.log" \
    --daemonize yes --maxmemory-policy noeviction
  for _ in $(seq 1 100); do
    if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && [ -f "$REDIS_DIR/pid" ]; then
      log "Redis up on 127.0.0.1:$REDIS_PORT"
      return
    fi
    sleep 0.1
  done
  log "Redis did not start; see $REDIS_DIR/redis.log"
  exit 1
}

load_schema() {
  mariadb --no-defaults -uroot --socket="$DB_DIR/sock" -e "CREATE DATABASE IF NOT EXISTS \`$DB_NAME\`"
  mariadb --no-defaults -uroot --socket="$DB_DIR/sock" "$DB_NAME" <"$ROOT/sql/schema.sql"
}

write_env() {
  cat >"$ENV_FILE" <<ENV
PRIMER_MYSQL_URL=mysql://root:@127.0.0.1:$DB_PORT/$DB_NAME
PRIMER_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
PRIMER_BROKER_URL=redis://127.0.0.1:$REDIS_PORT/1
PRIMER_MYSQL_SOCKET=$DB_DIR/sock
ENV
  log "wrote $ENV_FILE"
}

stop_one() {
  local name="$1" pidfile="$2"
  if alive "$pidfile"; then
    local pid
    pid="$(cat "$pidfile")"
    kill "$pid"
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    log "$name stopped (pid $pid)"
  fi
}

case "${1:-start}" in
  start)
    need_packages
    start_mariadb
    start_redis
    load_schema
    write_env
    ;;
  stop)
    stop_one Redis "$REDIS_DIR/pid"
    stop_one MariaDB "$DB_DIR/pid"
    ;;
  status)
    alive "$DB_DIR/pid" && echo "mariadb: running, port $(cat "$DB_DIR/port")" || echo "mariadb: stopped"
    alive "$REDIS_DIR/pid" && echo "redis: running, port $(cat "$REDIS_DIR/port")" || echo "redis: stopped"
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
