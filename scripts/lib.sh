# Shared helpers for scripts/dev and scripts/test (sourced, not run).
# They start what this machine kind is expected to run (PostgreSQL and Redis
# on loopback) when it is not running, and install the tools the suite needs.

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
