# Shared helpers for scripts/dev and scripts/test (sourced, not run).
# They start what this machine kind is expected to run (PostgreSQL and Redis
# on loopback) when it is not running, and install the tools the suite needs.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
# Where cargo puts binaries (CARGO_TARGET_DIR may point at a shared one).
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

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

# Installs a command-line tool from PyPI (into the Python that runs pip,
# beside cfn-lint) unless the command is already there: ensure_pip_tool CMD PACKAGE.
ensure_pip_tool() {
  command -v "$1" >/dev/null && return 0
  log "installing $2 from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check "$2"
  hash -r
  command -v "$1" >/dev/null
}

# cargo-lambda's PyPI package brings zig, with which it cross-compiles for arm64.
ensure_cargo_lambda() { ensure_pip_tool cargo-lambda cargo-lambda; }
ensure_cfn_lint() { ensure_pip_tool cfn-lint cfn-lint; }
ensure_sam_cli() { ensure_pip_tool sam aws-sam-cli; }

# The standard library for the Lambda functions' target (arm64).
ensure_aarch64_target() {
  rustup target list --installed | grep -qx aarch64-unknown-linux-gnu && return 0
  log "adding the aarch64-unknown-linux-gnu target"
  rustup target add aarch64-unknown-linux-gnu
}

# Runs a command with the environment SAM CLI needs here: no telemetry, dummy
# credentials and a region (nothing is sent to AWS; the values only satisfy
# the SDK's checks).
sam_env() {
  env -u AWS_SESSION_TOKEN -u AWS_PROFILE SAM_CLI_TELEMETRY=0 AWS_ACCESS_KEY_ID=ci-dummy-key \
    AWS_SECRET_ACCESS_KEY=ci-dummy-secret AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 \
    AWS_EC2_METADATA_DISABLED=true "$@"
}

# A prefix that runs a command without network (a namespace holding only a
# loopback device) where this machine allows it, else nothing:
# sam_env "${OFFLINE[@]}" sam validate …
OFFLINE=()
unshare -n true 2>/dev/null && OFFLINE=(unshare -n)

# The secret scan: scripts that configure secrets append their values to
# $SECRETS_FILE (one a line) and keep their logs in $LOG_DIR; scan_logs
# fails, naming the files (never printing the values), if one appears in any
# file of $LOG_DIR. scripts/test sets both for the whole run; a script run
# alone gets its own.
init_log_dir() {
  if [ -z "${LOG_DIR:-}" ]; then
    LOG_DIR="$(mktemp -d /tmp/switchboard-logs.XXXXXX)"
    OWN_LOG_DIR=1
  fi
  export LOG_DIR
  export SECRETS_FILE="${SECRETS_FILE:-$LOG_DIR/.secrets}"
  touch "$SECRETS_FILE"
}

# A distinctive secret value (a prefix naming it, and 24 random hex digits),
# recorded for the scan: secret NAME.
secret() {
  local value
  value="$1-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  printf '%s\n' "$value" >>"$SECRETS_FILE"
  printf '%s' "$value"
}

scan_logs() {
  [ -s "$SECRETS_FILE" ] || { echo "no secret recorded for the scan" >&2; return 1; }
  local found
  found="$(grep -rlF -f "$SECRETS_FILE" --exclude="$(basename "$SECRETS_FILE")" "$LOG_DIR" || true)"
  if [ -n "$found" ]; then
    echo "a configured secret appears in these logs:" >&2
    echo "$found" >&2
    return 1
  fi
  log "no secret ($(wc -l <"$SECRETS_FILE") configured) in $(find "$LOG_DIR" -type f ! -name "$(basename "$SECRETS_FILE")" | wc -l) log files"
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
  trap stop_redis_cluster EXIT
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
