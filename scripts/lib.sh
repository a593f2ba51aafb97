# Shared helpers for scripts/dev and scripts/test (sourced, not run).
# They start what this machine kind is expected to run (PostgreSQL and Redis
# on loopback) when it is not running, and install the tools the suite needs.

ON_EXIT=()
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() { # host port seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do port_open "$1" "$2" && return 0; sleep 0.1; done
  return 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

ensure_postgres() {
  port_open 127.0.0.1 5432 && return 0
  log "PostgreSQL is not running on 127.0.0.1:5432; starting it"
  if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  wait_port 127.0.0.1 5432 20 || { echo "PostgreSQL did not start" >&2; return 1; }
}

ensure_redis() {
  port_open 127.0.0.1 6379 && return 0
  log "Redis is not running on 127.0.0.1:6379; starting it"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port 127.0.0.1 6379 20 || { echo "Redis did not start" >&2; return 1; }
}

# Creates database $1 on the local server if it does not exist.
ensure_database() {
  local db="$1"
  psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE \"$db\""
}

ensure_cargo_lambda() {
  command -v cargo-lambda >/dev/null && return 0
  log "installing cargo-lambda from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check cargo-lambda
  hash -r
  command -v cargo-lambda >/dev/null
}

ensure_cfn_lint() {
  command -v cfn-lint >/dev/null && return 0
  log "installing cfn-lint from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check cfn-lint
  hash -r
  command -v cfn-lint >/dev/null
}

# A free port p below 55536 whose cluster-bus port p+10000 is free too.
free_cluster_port() {
  python3 -c '
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
while True:
    p = random.randint(20000, 45000)
    if free(p) and free(p + 10000):
        print(p); break'
}

# Starts a throwaway 3-master Redis Cluster on spare loopback ports (about
# 4 s) and exports REDIS_CLUSTER_URL (its node list, as REDIS_URL takes it).
# The nodes are shut down when the calling script exits.
start_redis_cluster() {
  local dir ports=() port
  dir="$(mktemp -d /tmp/switchboard-cluster.XXXXXX)"
  for _ in 1 2 3; do
    port="$(free_cluster_port)"
    mkdir -p "$dir/$port"
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file "$dir/$port/nodes.conf" --dir "$dir/$port" --save "" --appendonly no \
      --daemonize yes --logfile "$dir/$port/redis.log" --pidfile "$dir/$port/redis.pid"
    ports+=("$port")
  done
  CLUSTER_DIR="$dir"
  CLUSTER_PORTS="${ports[*]}"
  on_exit stop_redis_cluster
  for port in "${ports[@]}"; do
    wait_port 127.0.0.1 "$port" 20 || { echo "cluster node $port did not start" >&2; return 1; }
  done
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") --cluster-replicas 0 --cluster-yes >/dev/null
  local i
  for ((i = 0; i < 100; i++)); do
    redis-cli -p "${ports[0]}" cluster info | grep -q 'cluster_state:ok' && break
    sleep 0.1
  done
  REDIS_CLUSTER_URL="$(printf 'redis://127.0.0.1:%s,' "${ports[@]}")"
  export REDIS_CLUSTER_URL="${REDIS_CLUSTER_URL%,}"
}

stop_redis_cluster() {
  local port
  for port in ${CLUSTER_PORTS:-}; do
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  done
  [[ -n "${CLUSTER_DIR:-}" ]] && rm -rf "$CLUSTER_DIR"
  CLUSTER_PORTS=""
}

ensure_moto() {
  command -v moto_server >/dev/null && return 0
  log "installing moto (server) from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check "moto[server]"
  hash -r
  command -v moto_server >/dev/null
}

# Starts moto's server (AWS APIs: Secrets Manager, DynamoDB, …) on a spare
# loopback port and exports TEST_MOTO_URL (the tests' endpoint). Dummy
# credentials and a region are exported for the AWS SDKs and CLIs the tests
# run; nothing here can reach AWS itself. The server is stopped when the
# calling script exits (stop_moto), together with anything else registered
# through on_exit.
start_moto() {
  ensure_moto
  local port
  port="$(free_port)"
  MOTO_LOG="$(mktemp /tmp/switchboard-moto.XXXXXX.log)"
  moto_server -H 127.0.0.1 -p "$port" >"$MOTO_LOG" 2>&1 &
  MOTO_PID=$!
  on_exit stop_moto
  wait_port 127.0.0.1 "$port" 30 || { echo "moto_server did not start (see $MOTO_LOG)" >&2; return 1; }
  export TEST_MOTO_URL="http://127.0.0.1:$port"
  export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
  export AWS_REGION="${AWS_REGION:-us-east-1}" AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
}

stop_moto() {
  if [[ -n "${MOTO_PID:-}" ]]; then
    kill "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
  fi
  [[ -n "${MOTO_LOG:-}" ]] && rm -f "$MOTO_LOG"
  MOTO_PID=""
}

# Registers a command to run when the calling script exits; several may be
# registered (a plain `trap … EXIT` would replace the one before it).
on_exit() {
  ON_EXIT+=("$1")
  trap 'for f in "${ON_EXIT[@]}"; do "$f"; done' EXIT
}
