#!/usr/bin/env bash
# Private MariaDB (binlog on, ROW, FULL image, FULL metadata), a GTID read replica of it,
# a private Redis, a private 6-node Redis Cluster (3 primaries, 3 replicas) and a private
# TLS Redis (self-signed CA) and a private RabbitMQ for primer-cache: own data dirs under .run/ (gitignored), spare
# ports, idempotent.
#
#   scripts/services.sh start   start (or reuse) them, load the schema, write .run/services.env
#   scripts/services.sh stop    stop what this script started (by the PIDs it recorded)
#   scripts/services.sh status  print what runs
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="$ROOT/.run"
DB_DIR="$RUN/mariadb"
REPLICA_DIR="$RUN/replica"
REDIS_DIR="$RUN/redis"
CLUSTER_DIR="$RUN/redis-cluster"
CLUSTER_NODES=6
TLS_DIR="$RUN/redis-tls"
RABBIT_DIR="$RUN/rabbitmq"
RABBIT_BIN=/usr/lib/rabbitmq/bin  # the real scripts: /usr/sbin's wrappers `su` to rabbitmq
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
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  [ -x "$RABBIT_BIN/rabbitmq-server" ] || missing+=(rabbitmq-server)
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

# launch_mariadb NAME DIR ARGS...: initialise DIR/data when it is new, start mariadbd on a
# free port (recorded in DIR/port and left in LAUNCHED_PORT) with the binlog settings the
# listener needs plus ARGS, and wait until it answers.
launch_mariadb() {
  local name="$1" dir="$2"
  shift 2
  mkdir -p "$dir"
  if [ ! -d "$dir/data/mysql" ]; then
    log "initialising $name data dir $dir/data"
    mariadb-install-db --no-defaults --datadir="$dir/data" --user="$(id -un)" \
      --auth-root-authentication-method=normal >"$dir/install.log" 2>&1 \
      || { cat "$dir/install.log" >&2; exit 1; }
  fi
  LAUNCHED_PORT="$(free_port)"
  echo "$LAUNCHED_PORT" >"$dir/port"
  "$(mariadbd_bin)" --no-defaults --datadir="$dir/data" --socket="$dir/sock" \
    --port="$LAUNCHED_PORT" --bind-address=127.0.0.1 --user="$(id -un)" --skip-name-resolve \
    --pid-file="$dir/pid" --log-error="$dir/error.log" \
    --log-bin="$dir/data/binlog" --binlog-format=ROW --binlog-row-image=FULL \
    --binlog-row-metadata=FULL --innodb-flush-log-at-trx-commit=2 --sync-binlog=0 \
    "$@" >/dev/null 2>&1 &
  for _ in $(seq 1 300); do
    if sql "$dir/sock" 'SELECT 1' >/dev/null 2>&1; then
      log "$name up on 127.0.0.1:$LAUNCHED_PORT"
      return
    fi
    sleep 0.1
  done
  log "$name did not start; see $dir/error.log"
  tail -20 "$dir/error.log" >&2 || true
  exit 1
}

start_mariadb() {
  if alive "$DB_DIR/pid"; then
    DB_PORT="$(cat "$DB_DIR/port")"
    log "MariaDB already running on port $DB_PORT (pid $(cat "$DB_DIR/pid"))"
    return
  fi
  launch_mariadb MariaDB "$DB_DIR" --server-id=1 --max-connections=500 \
    --innodb-buffer-pool-size=256M
  DB_PORT="$LAUNCHED_PORT"
}

# SQL as root over a server's socket: sql SOCKET STATEMENT (tab-separated rows, no header)
sql() { mariadb --no-defaults -uroot --socket="$1" -N -B -e "$2"; }

# One field of SHOW SLAVE STATUS on the replica ("" when it is not a replica yet)
slave_field() {
  mariadb --no-defaults -uroot --socket="$REPLICA_DIR/sock" -e 'SHOW SLAVE STATUS\G' \
    | awk -v f="$1" -F': ' '$1 ~ "^ *"f"$" {print $2}'
}

# A read replica of the private MariaDB (issue 8's tests): GTID replication, its own binlog
# (log_slave_updates), server id 2. Reused when running; pointed at the primary's current port.
start_replica() {
  if alive "$REPLICA_DIR/pid"; then
    REPLICA_PORT="$(cat "$REPLICA_DIR/port")"
    log "MariaDB replica already running on port $REPLICA_PORT (pid $(cat "$REPLICA_DIR/pid"))"
  else
    # skip-slave-start: it is pointed at the primary (whose port may have changed) below.
    launch_mariadb "MariaDB replica" "$REPLICA_DIR" --server-id=2 --log-slave-updates \
      --skip-slave-start --max-connections=300 --innodb-buffer-pool-size=64M
    REPLICA_PORT="$LAUNCHED_PORT"
  fi
  follow_primary
}

follow_primary() {
  if [ "$(slave_field Master_Port)" = "$DB_PORT" ] && [ "$(slave_field Slave_SQL_Running)" = Yes ] \
    && [ "$(slave_field Slave_IO_Running)" = Yes ]; then
    return
  fi
  if [ -z "$(sql "$REPLICA_DIR/sock" 'SELECT @@GLOBAL.gtid_slave_pos')" ]; then
    seed_replica
  fi
  sql "$REPLICA_DIR/sock" "STOP SLAVE; CHANGE MASTER TO MASTER_HOST='127.0.0.1', \
    MASTER_PORT=$DB_PORT, MASTER_USER='root', MASTER_PASSWORD='', \
    MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE"
  for _ in $(seq 1 100); do
    if [ "$(slave_field Slave_IO_Running)" = Yes ] && [ "$(slave_field Slave_SQL_Running)" = Yes ]; then
      log "MariaDB replica follows 127.0.0.1:$DB_PORT from GTID $(sql "$REPLICA_DIR/sock" \
        'SELECT @@GLOBAL.gtid_slave_pos')"
      return
    fi
    sleep 0.1
  done
  log "MariaDB replica does not replicate: $(slave_field Last_IO_Error) $(slave_field Last_SQL_Error)"
  exit 1
}

# A fresh replica starts from a copy of the primary's own schemas and the GTID position of
# that copy; with none, from the primary's current position.
seed_replica() {
  local databases
  databases="$(sql "$DB_DIR/sock" "SELECT GROUP_CONCAT(schema_name SEPARATOR ' ') \
    FROM information_schema.schemata WHERE schema_name NOT IN \
    ('mysql', 'information_schema', 'performance_schema', 'sys')")"
  if [ -z "$databases" ] || [ "$databases" = NULL ]; then
    sql "$REPLICA_DIR/sock" "SET GLOBAL gtid_slave_pos = \
      '$(sql "$DB_DIR/sock" 'SELECT @@GLOBAL.gtid_binlog_pos')'"
    return
  fi
  log "copying schemas $databases to the replica"
  # shellcheck disable=SC2086 # one word per schema
  mariadb-dump --no-defaults -uroot --socket="$DB_DIR/sock" --single-transaction --gtid \
    --master-data=2 --routines --events --databases $databases >"$REPLICA_DIR/seed.sql"
  local position
  position="$(sed -n "s/^-- SET GLOBAL gtid_slave_pos='\(.*\)';$/\1/p" "$REPLICA_DIR/seed.sql")"
  mariadb --no-defaults -uroot --socket="$REPLICA_DIR/sock" --init-command='SET sql_log_bin=0' \
    <"$REPLICA_DIR/seed.sql"
  sql "$REPLICA_DIR/sock" "SET GLOBAL gtid_slave_pos = '$position'"
  rm -f "$REPLICA_DIR/seed.sql"
}

start_redis() {
  if alive "$REDIS_DIR/pid"; then
    REDIS_PORT="$(cat "$REDIS_DIR/port")"
    log "Redis already running on port $REDIS_PORT (pid $(cat "$REDIS_DIR/pid"))"
    return
  fi
  mkdir -p "$REDIS_DIR"
  rm -f "$REDIS_DIR/dump.rdb"  # it keeps nothing from an earlier start
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

# A cluster node's port: its bus port (port + 10000) must be free too, and at most 65535.
free_cluster_port() {
  python3 - <<'PY'
import random
import socket
for _ in range(200):
    port = random.randint(20000, 45000)
    try:
        for p in (port, port + 10000):
            s = socket.socket()
            s.bind(("127.0.0.1", p))
            s.close()
    except OSError:
        continue
    print(port)
    break
else:
    raise SystemExit("no free port pair for a cluster node")
PY
}

# One cluster node: its own dir, port, node-name file (nodes.conf) and pid.
start_cluster_node() {
  local dir="$1" port
  mkdir -p "$dir"
  port="$(free_cluster_port)"
  echo "$port" >"$dir/port"
  # A fresh cluster each start: ports change, the old topology is stale, and a node that was a
  # replica kept the data its primary sent it (dump.rdb): loaded again, it would refuse to join.
  rm -f "$dir/nodes.conf" "$dir/dump.rdb"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --cluster-enabled yes --cluster-config-file "$dir/nodes.conf" --cluster-node-timeout 2000 \
    --dir "$dir" --pidfile "$dir/pid" --logfile "$dir/redis.log" \
    --daemonize yes --maxmemory-policy noeviction
  for _ in $(seq 1 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && [ -f "$dir/pid" ] && return
    sleep 0.1
  done
  log "cluster node in $dir did not start; see $dir/redis.log"
  exit 1
}

cluster_running() {
  local i
  for i in $(seq 1 "$CLUSTER_NODES"); do alive "$CLUSTER_DIR/node$i/pid" || return 1; done
  [ -f "$CLUSTER_DIR/created" ]
}

start_redis_cluster() {
  if cluster_running; then
    CLUSTER_PORT="$(cat "$CLUSTER_DIR/node1/port")"
    log "Redis Cluster already running (first node on port $CLUSTER_PORT)"
    return
  fi
  stop_redis_cluster  # a half-started cluster from an earlier run goes first
  mkdir -p "$CLUSTER_DIR"
  local i addrs=()
  for i in $(seq 1 "$CLUSTER_NODES"); do
    start_cluster_node "$CLUSTER_DIR/node$i"
    addrs+=("127.0.0.1:$(cat "$CLUSTER_DIR/node$i/port")")
  done
  redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes \
    >"$CLUSTER_DIR/create.log" 2>&1 || { cat "$CLUSTER_DIR/create.log" >&2; exit 1; }
  CLUSTER_PORT="$(cat "$CLUSTER_DIR/node1/port")"
  for _ in $(seq 1 300); do
    local ok=1
    for i in $(seq 1 "$CLUSTER_NODES"); do
      redis-cli -p "$(cat "$CLUSTER_DIR/node$i/port")" cluster info 2>/dev/null \
        | grep -q 'cluster_state:ok' || ok=0
    done
    if [ "$ok" = 1 ]; then
      touch "$CLUSTER_DIR/created"
      log "Redis Cluster up: ${addrs[*]} (3 primaries, 3 replicas)"
      return
    fi
    sleep 0.1
  done
  log "Redis Cluster did not reach cluster_state:ok; see $CLUSTER_DIR/create.log"
  exit 1
}

stop_redis_cluster() {
  local i
  for i in $(seq 1 "$CLUSTER_NODES"); do stop_one "Redis Cluster node $i" "$CLUSTER_DIR/node$i/pid"; done
  rm -f "$CLUSTER_DIR/created"
}

# A self-signed CA and a server certificate for 127.0.0.1/localhost signed by it.
make_tls_certs() {
  [ -f "$TLS_DIR/server.crt" ] && return
  mkdir -p "$TLS_DIR"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=primer-cache test CA" \
    -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.crt" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" >/dev/null 2>&1
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$TLS_DIR/san.ext"
  openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca.crt" -CAkey "$TLS_DIR/ca.key" \
    -CAcreateserial -days 3650 -extfile "$TLS_DIR/san.ext" -out "$TLS_DIR/server.crt" >/dev/null 2>&1
}

start_redis_tls() {
  if alive "$TLS_DIR/pid"; then
    TLS_PORT="$(cat "$TLS_DIR/port")"
    log "TLS Redis already running on port $TLS_PORT (pid $(cat "$TLS_DIR/pid"))"
    return
  fi
  make_tls_certs
  rm -f "$TLS_DIR/dump.rdb"  # it keeps nothing from an earlier start
  TLS_PORT="$(free_port)"
  echo "$TLS_PORT" >"$TLS_DIR/port"
  # TLS only (port 0: no plaintext listener); clients need not present a certificate.
  redis-server --port 0 --tls-port "$TLS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --tls-cert-file "$TLS_DIR/server.crt" --tls-key-file "$TLS_DIR/server.key" \
    --tls-ca-cert-file "$TLS_DIR/ca.crt" --tls-auth-clients no \
    --dir "$TLS_DIR" --pidfile "$TLS_DIR/pid" --logfile "$TLS_DIR/redis.log" \
    --daemonize yes --maxmemory-policy noeviction
  for _ in $(seq 1 100); do
    if redis-cli --tls --cacert "$TLS_DIR/ca.crt" -p "$TLS_PORT" ping >/dev/null 2>&1 \
      && [ -f "$TLS_DIR/pid" ]; then
      log "TLS Redis up on 127.0.0.1:$TLS_PORT"
      return
    fi
    sleep 0.1
  done
  log "TLS Redis did not start; see $TLS_DIR/redis.log"
  exit 1
}

# RabbitMQ: its own node name (this worktree's), AMQP, distribution and epmd ports, data,
# logs, config and Erlang cookie (HOME) under .run/rabbitmq, so it never meets the system
# RabbitMQ (5672, epmd 4369) or another worktree's. No plugins (no management UI).
rabbit_env() {
  export HOME="$RABBIT_DIR"
  export RABBITMQ_NODENAME="primer-cache-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)@localhost"
  export RABBITMQ_NODE_PORT="$(cat "$RABBIT_DIR/port")"
  export RABBITMQ_DIST_PORT="$(cat "$RABBIT_DIR/dist_port")"
  export ERL_EPMD_PORT="$(cat "$RABBIT_DIR/epmd_port")"
  export ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_MNESIA_BASE="$RABBIT_DIR/mnesia"
  export RABBITMQ_LOG_BASE="$RABBIT_DIR/log"
  export RABBITMQ_CONFIG_FILE="$RABBIT_DIR/rabbitmq.conf"
  export RABBITMQ_ADVANCED_CONFIG_FILE="$RABBIT_DIR/advanced.config"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$RABBIT_DIR/enabled_plugins"
  export RABBITMQ_CONF_ENV_FILE="$RABBIT_DIR/rabbitmq-env.conf"  # not /etc's
  export RABBITMQ_PID_FILE="$RABBIT_DIR/pid"
}

start_rabbitmq() {
  if alive "$RABBIT_DIR/pid"; then
    RABBIT_PORT="$(cat "$RABBIT_DIR/port")"
    log "RabbitMQ already running on port $RABBIT_PORT (pid $(cat "$RABBIT_DIR/pid"))"
    return
  fi
  mkdir -p "$RABBIT_DIR"
  rm -f "$RABBIT_DIR/pid"
  free_port >"$RABBIT_DIR/port"
  free_port >"$RABBIT_DIR/dist_port"
  free_port >"$RABBIT_DIR/epmd_port"
  RABBIT_PORT="$(cat "$RABBIT_DIR/port")"
  printf 'listeners.tcp.default = 127.0.0.1:%s\n' "$RABBIT_PORT" >"$RABBIT_DIR/rabbitmq.conf"
  echo '[].' >"$RABBIT_DIR/enabled_plugins"
  : >"$RABBIT_DIR/rabbitmq-env.conf"
  (
    rabbit_env
    setsid "$RABBIT_BIN/rabbitmq-server" >"$RABBIT_DIR/server.log" 2>&1 </dev/null &
    for _ in $(seq 1 600); do
      if [ -f "$RABBITMQ_PID_FILE" ] \
        && "$RABBIT_BIN/rabbitmqctl" -q -n "$RABBITMQ_NODENAME" await_startup --timeout 60 \
          >/dev/null 2>&1; then
        exit 0
      fi
      sleep 0.2
    done
    exit 1
  ) || {
    log "RabbitMQ did not start; see $RABBIT_DIR/server.log"
    tail -20 "$RABBIT_DIR/server.log" >&2 || true
    exit 1
  }
  log "RabbitMQ up on 127.0.0.1:$RABBIT_PORT"
}

stop_rabbitmq() {
  alive "$RABBIT_DIR/pid" || return 0
  local pid
  pid="$(cat "$RABBIT_DIR/pid")"
  (
    rabbit_env
    "$RABBIT_BIN/rabbitmqctl" -q -n "$RABBITMQ_NODENAME" stop >/dev/null 2>&1 || kill "$pid"
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    # the node started its own epmd on its private port: end that too
    epmd -port "$ERL_EPMD_PORT" -kill >/dev/null 2>&1 || true
  )
  log "RabbitMQ stopped (pid $pid)"
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
PRIMER_REDIS_CLUSTER_URL=redis://127.0.0.1:$CLUSTER_PORT/0
PRIMER_REDIS_TLS_URL=rediss://127.0.0.1:$TLS_PORT/0?ssl_ca_certs=$TLS_DIR/ca.crt
PRIMER_REDIS_TLS_CA=$TLS_DIR/ca.crt
PRIMER_REPLICA_URL=mysql://root:@127.0.0.1:$REPLICA_PORT/$DB_NAME
PRIMER_REPLICA_SOCKET=$REPLICA_DIR/sock
PRIMER_AMQP_URL=amqp://guest:guest@127.0.0.1:$RABBIT_PORT//
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
    start_replica
    start_redis
    start_redis_cluster
    start_redis_tls
    start_rabbitmq
    load_schema
    write_env
    ;;
  stop)
    stop_rabbitmq
    stop_one Redis "$REDIS_DIR/pid"
    stop_redis_cluster
    stop_one "TLS Redis" "$TLS_DIR/pid"
    stop_one "MariaDB replica" "$REPLICA_DIR/pid"
    stop_one MariaDB "$DB_DIR/pid"
    ;;
  status)
    alive "$DB_DIR/pid" && echo "mariadb: running, port $(cat "$DB_DIR/port")" || echo "mariadb: stopped"
    alive "$REPLICA_DIR/pid" && echo "replica: running, port $(cat "$REPLICA_DIR/port")" \
      || echo "replica: stopped"
    alive "$REDIS_DIR/pid" && echo "redis: running, port $(cat "$REDIS_DIR/port")" || echo "redis: stopped"
    cluster_running && echo "redis cluster: running, port $(cat "$CLUSTER_DIR/node1/port") and 5 more" \
      || echo "redis cluster: stopped"
    alive "$TLS_DIR/pid" && echo "redis tls: running, port $(cat "$TLS_DIR/port")" || echo "redis tls: stopped"
    alive "$RABBIT_DIR/pid" && echo "rabbitmq: running, port $(cat "$RABBIT_DIR/port")" \
      || echo "rabbitmq: stopped"
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
