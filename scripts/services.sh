# Sourced by scripts/test and scripts/reliability: starts the services the tests need when
# they are not running (the rust-svc machine kind's own start commands) and installs the
# test tools a fresh machine lacks. Expects `log` to be defined.

wait_for() { # name, tries, command...
  local name=$1 tries=$2; shift 2
  for _ in $(seq "$tries"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "error: $name did not come up" >&2
  return 1
}

# --- services (the rust-svc machine kind's own start commands) ---
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
  wait_for PostgreSQL 30 pg_isready -h 127.0.0.1 -p 5432 -q
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for Redis 30 redis-cli -h 127.0.0.1 -p 6379 ping
fi
if ! rabbitmq-diagnostics -q check_port_connectivity >/dev/null 2>&1; then
  log "starting RabbitMQ"
  rabbitmq-server -detached || true
  wait_for RabbitMQ 90 rabbitmq-diagnostics -q check_port_connectivity
fi

# victoria-metrics is the InfluxDB-API server of the metrics-writer tests (each test starts
# its own on a free port).
if ! command -v victoria-metrics >/dev/null 2>&1; then
  log "installing victoria-metrics"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq victoria-metrics >/dev/null
fi

# tmux drives the interactive `whisperfleet chat` test in a real terminal.
if ! command -v tmux >/dev/null 2>&1; then
  log "installing tmux"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux >/dev/null
fi

