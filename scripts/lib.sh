# Shared helpers for scripts/dev and scripts/test (sourced, not run).
# They start what this machine kind is expected to run (PostgreSQL and Redis
# on loopback) when it is not running, and install the tools the suite needs.

ON_EXIT=()
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

# Functions run when the calling script exits (each helper that starts a
# throwaway server registers its stop here; one EXIT trap runs them all).
EXIT_HOOKS=()
at_exit() {
  EXIT_HOOKS+=("$1")
  trap run_exit_hooks EXIT
}
run_exit_hooks() {
  local hook
  for hook in "${EXIT_HOOKS[@]}"; do "$hook" || true; done
}

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

# Installs a Python module from PyPI unless it imports: ensure_python_module MODULE PACKAGE.
ensure_python_module() {
  python3 -c "import $1" 2>/dev/null && return 0
  log "installing $2 from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check "$2"
  python3 -c "import $1"
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
  at_exit stop_redis_cluster
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
# loopback port and exports TEST_MOTO_URL (the tests' endpoint; the
# scripts point DynamoDB at it with AWS_ENDPOINT_URL_DYNAMODB). Dummy
# credentials and a region are exported for the AWS SDKs and CLIs the tests
# run; nothing here can reach AWS itself. The server is stopped when the
# calling script exits (stop_moto), together with anything else registered
# through at_exit.
start_moto() {
  ensure_moto
  local port
  port="$(free_port)"
  MOTO_LOG="$(mktemp /tmp/switchboard-moto.XXXXXX.log)"
  moto_server -H 127.0.0.1 -p "$port" >"$MOTO_LOG" 2>&1 &
  MOTO_PID=$!
  at_exit stop_moto
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

# Runs "$@" as the postgres user when we are root (initdb refuses root).
as_postgres() {
  if [[ $EUID -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A CA (and a second, unrelated one) and a server certificate for
# 127.0.0.1/localhost signed by the first, made with openssl into $1.
make_test_certificates() {
  local dir="$1" name
  if ! command -v openssl >/dev/null; then
    log "installing openssl"
    apt-get update -qq && apt-get install -y -qq openssl >/dev/null
  fi
  for name in ca wrong-ca; do
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$name.key" 2>/dev/null
    openssl req -new -key "$dir/$name.key" -subj "/CN=Switchboard test $name" -out "$dir/$name.csr"
    printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n' >"$dir/ca.ext"
    openssl x509 -req -in "$dir/$name.csr" -signkey "$dir/$name.key" -days 2 -extfile "$dir/ca.ext" \
      -out "$dir/$name.pem" 2>/dev/null
  done
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/server.key" 2>/dev/null
  openssl req -new -key "$dir/server.key" -subj "/CN=localhost" -out "$dir/server.csr"
  printf '%s\n' 'basicConstraints=CA:FALSE' 'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth' \
    'subjectAltName=IP:127.0.0.1,DNS:localhost' >"$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
    -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null
}

# Starts a TLS-only redis-server and a TLS-only throwaway PostgreSQL cluster
# (ssl = on, hostssl only) on spare loopback ports, with certificates from a
# CA made for the run, and exports what the TLS tests read:
#   TEST_TLS_CA_FILE, TEST_TLS_WRONG_CA_FILE (a CA that signed nothing here),
#   TEST_REDIS_TLS_URL (rediss://, the default user), TEST_REDIS_TLS_RBAC_URL
#   (an ACL user with a password, as ElastiCache RBAC), TEST_POSTGRES_TLS_URL
#   (no sslmode: the tests choose it).
# Both are stopped when the calling script exits.
start_tls_stores() {
  local dir pgbin redis_port pg_port i
  dir="$(mktemp -d /tmp/switchboard-tls.XXXXXX)"
  chmod 755 "$dir"
  TLS_DIR="$dir"
  at_exit stop_tls_stores
  make_test_certificates "$dir"

  redis_port="$(free_port)"
  redis-server --port 0 --tls-port "$redis_port" --bind 127.0.0.1 \
    --tls-cert-file "$dir/server.pem" --tls-key-file "$dir/server.key" --tls-ca-cert-file "$dir/ca.pem" \
    --tls-auth-clients no --save "" --appendonly no --dir "$dir" \
    --user switchboard on '>tls-test-secret' '~*' '&*' '+@all' \
    --daemonize yes --logfile "$dir/redis.log" --pidfile "$dir/redis.pid"
  wait_port 127.0.0.1 "$redis_port" 20 || { echo "TLS redis-server did not start" >&2; return 1; }

  pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
  [[ -x "$pgbin/initdb" ]] || pgbin="$(dirname "$(command -v initdb)")"
  pg_port="$(free_port)"
  mkdir -p "$dir/pg"
  cp "$dir/server.pem" "$dir/server.key" "$dir/pg/"
  [[ $EUID -eq 0 ]] && chown -R postgres "$dir/pg"
  chmod 600 "$dir/pg/server.key"
  as_postgres "$pgbin/initdb" -D "$dir/pg/data" -U postgres --auth=trust -E UTF8 >/dev/null
  cat >>"$dir/pg/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$dir/pg'
ssl = on
ssl_cert_file = '$dir/pg/server.pem'
ssl_key_file = '$dir/pg/server.key'
fsync = off
CONF
  # TLS only over TCP: a plaintext client finds no pg_hba entry.
  printf 'local all all trust\nhostssl all all 127.0.0.1/32 trust\n' >"$dir/pg/data/pg_hba.conf"
  as_postgres "$pgbin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/postgres.log" -w start >/dev/null
  TLS_PG_DATA="$dir/pg/data"
  TLS_PG_BIN="$pgbin"
  as_postgres "$pgbin/psql" -h "$dir/pg" -p "$pg_port" -U postgres -d postgres -qc 'CREATE DATABASE test'

  export TEST_TLS_CA_FILE="$dir/ca.pem"
  export TEST_TLS_WRONG_CA_FILE="$dir/wrong-ca.pem"
  export TEST_REDIS_TLS_URL="rediss://127.0.0.1:$redis_port/0"
  export TEST_REDIS_TLS_RBAC_URL="rediss://switchboard:tls-test-secret@127.0.0.1:$redis_port/0"
  export TEST_POSTGRES_TLS_URL="postgres://postgres@127.0.0.1:$pg_port/test"
}

stop_tls_stores() {
  [[ -n "${TLS_DIR:-}" ]] || return 0
  [[ -f "$TLS_DIR/redis.pid" ]] && kill "$(cat "$TLS_DIR/redis.pid")" 2>/dev/null
  [[ -n "${TLS_PG_DATA:-}" ]] && as_postgres "$TLS_PG_BIN/pg_ctl" -D "$TLS_PG_DATA" -m immediate stop >/dev/null 2>&1
  rm -rf "$TLS_DIR"
  TLS_DIR="" TLS_PG_DATA=""
}
