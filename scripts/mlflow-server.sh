#!/usr/bin/env bash
# Throwaway PostgreSQL cluster + MLflow tracking server, for development and tests.
#
#   mlflow-server.sh start    initdb (first time) + pg_ctl start + role/db + mlflow server; waits for /health
#   mlflow-server.sh stop     stops mlflow (whole process group), then PostgreSQL (pg_ctl -m fast)
#   mlflow-server.sh status   prints what runs, exit 0 when both run, 3 otherwise
#   mlflow-server.sh uri      prints the tracking URI (http://$MLFLOW_HOST:$MLFLOW_PORT)
#   mlflow-server.sh destroy  stop, then rm -rf "$STATE_DIR"
#
# Secrets never appear on a command line (`ps`), in the logs, or in MLflow's store: the
# PostgreSQL password lives in $STATE_DIR/pgpass (mode 600, read by libpq through PGPASSFILE),
# and with AUTH=1 the admin password comes from MLFLOW_AUTH_ADMIN_PASSWORD or from
# $STATE_DIR/admin-password (made at the first start, mode 600).
#
# Environment (all optional):
#   STATE_DIR       everything lives here: pgdata/, pgsock/, artifacts/, *.log, *.pid   (default ./.mlflow-server)
#   PG_PORT         PostgreSQL TCP port on 127.0.0.1                                       (default 54329)
#   MLFLOW_PORT     MLflow server port on 127.0.0.1                                         (default 5001)
#   MLFLOW_HOST     address the MLflow server binds to                                       (default 127.0.0.1)
#   AUTH            1: MLflow's basic-auth app; every request needs a user and password      (default 0;
#                   required when MLFLOW_HOST is not a loopback address)
#   MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD   the first admin (default admin / the file)
#   PG_DB / PG_USER database and role that MLflow uses                                       (default mlflow/mlflow)
#   PG_PASSWORD     that role's password (default: random, made at the first start)
#   PG_BINDIR       PostgreSQL server binaries (default: `pg_config --bindir`, else newest /usr/lib/postgresql/*/bin)
#   PG_OS_USER      OS user that owns and runs the cluster when this script runs as root   (default postgres)
#   PG_FAST         1 (default): fsync=off, synchronous_commit=off, full_page_writes=off (throwaway data only)
#   MLFLOW          mlflow executable (default: `mlflow` on PATH)
#   MLFLOW_WORKERS  uvicorn workers (default 1)
#   START_TIMEOUT   seconds to wait for /health (default 120)
#   MLFLOW_SERVER_ENABLE_JOB_EXECUTION  MLflow's own switch for its job runner (default here: false)
set -euo pipefail

STATE_DIR="${STATE_DIR:-$PWD/.mlflow-server}"
PG_PORT="${PG_PORT:-54329}"
MLFLOW_PORT="${MLFLOW_PORT:-5001}"
PG_DB="${PG_DB:-mlflow}"
PG_USER="${PG_USER:-mlflow}"
MLFLOW_HOST="${MLFLOW_HOST:-127.0.0.1}"
AUTH="${AUTH:-0}"
PG_OS_USER="${PG_OS_USER:-postgres}"
PG_FAST="${PG_FAST:-1}"
MLFLOW="${MLFLOW:-mlflow}"
MLFLOW_WORKERS="${MLFLOW_WORKERS:-1}"
START_TIMEOUT="${START_TIMEOUT:-120}"
# MLflow 3.x starts a job runner + 7 huey consumer processes by default (GenAI jobs: scorers,
# trace rollups). Not needed for classic run tracking; off by default here (faster start, less RAM).
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
# MLflow telemetry would fetch https://config.mlflow-telemetry.io at run time: off.
export MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}"

mkdir -p "$STATE_DIR"
STATE_DIR="$(cd "$STATE_DIR" && pwd)"     # absolute: postgres and mlflow get it as an argument
PGDATA="$STATE_DIR/pgdata"
PGSOCK="$STATE_DIR/pgsock"
ARTIFACTS="$STATE_DIR/artifacts"
PG_LOG="$STATE_DIR/postgres.log"
MLFLOW_LOG="$STATE_DIR/mlflow.log"
MLFLOW_PID="$STATE_DIR/mlflow.pid"
TRACKING_URI="http://$MLFLOW_HOST:$MLFLOW_PORT"
# No password in the URI: libpq reads it from $PGPASSFILE. +psycopg2: SQLAlchemy 2.1 maps plain
# postgresql:// to psycopg (v3), which is not installed.
BACKEND_URI="postgresql+psycopg2://$PG_USER@127.0.0.1:$PG_PORT/$PG_DB"
AUTH_DB="${PG_DB}_auth"
export PGPASSFILE="$STATE_DIR/pgpass"
ADMIN_PASSWORD_FILE="$STATE_DIR/admin-password"

log() { printf '[mlflow-server] %s\n' "$*" >&2; }
# A secret in a file only its owner can read, made once.
secret_file() {
    [ -s "$1" ] && return 0
    ( umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$1" )
}
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

if [ -z "${PG_BINDIR:-}" ]; then
    if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then
        PG_BINDIR="$(pg_config --bindir)"
    else
        PG_BINDIR="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
    fi
fi
[ -x "$PG_BINDIR/initdb" ] && [ -x "$PG_BINDIR/pg_ctl" ] || die "no initdb/pg_ctl in '$PG_BINDIR' (apt-get install postgresql, or set PG_BINDIR)"

# initdb and postgres refuse to run as root: run them as $PG_OS_USER instead.
if [ "$(id -u)" = 0 ]; then
    id "$PG_OS_USER" >/dev/null 2>&1 || die "running as root but OS user '$PG_OS_USER' does not exist (set PG_OS_USER)"
    as_pg() { runuser -u "$PG_OS_USER" -- "$@"; }
else
    as_pg() { "$@"; }
fi

# psql as the cluster superuser over the unix socket in $PGSOCK (trust auth, local only).
pg_psql() { "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGSOCK" -p "$PG_PORT" -U postgres -d postgres "$@"; }

pg_running() { as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }
mlflow_pid() { [ -f "$MLFLOW_PID" ] && cat "$MLFLOW_PID" || true; }
# "running" = any live process left in mlflow's process group: if the mlflow parent itself dies
# (SIGKILL, OOM), its uvicorn child keeps serving as an orphan in the same group.
mlflow_running() { local p; p="$(mlflow_pid)"; [ -n "$p" ] && group_alive "$p"; }
# Live (non-zombie) processes in a process group. Exited children can stay <defunct> for a
# few seconds here because their reaper (PID 1) is slow, so plain `pgrep -g` over-waits.
group_alive() { ps -o stat= -g "$1" 2>/dev/null | grep -qv '^Z'; }
healthy() { curl -fs -o /dev/null --max-time 2 "$TRACKING_URI/health"; }

start_pg() {
    local t
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        t=$(now)
        # The unix socket path must stay under 107 bytes.
        [ ${#PGSOCK} -le 90 ] || die "STATE_DIR path too long for a unix socket: $PGSOCK"
        mkdir -p "$PGDATA" "$PGSOCK"
        if [ "$(id -u)" = 0 ]; then
            chown "$PG_OS_USER": "$PGDATA" "$PGSOCK"
            as_pg test -x "$STATE_DIR" || die "'$PG_OS_USER' cannot enter $STATE_DIR (a parent directory is not o+x)"
        fi
        chmod 700 "$PGDATA" "$PGSOCK"
        # Superuser 'postgres': trust over the private unix socket only; TCP needs a password.
        as_pg "$PG_BINDIR/initdb" -D "$PGDATA" -U postgres -E UTF8 --no-locale --no-sync \
            --auth-local=trust --auth-host=scram-sha-256 >"$STATE_DIR/initdb.log" 2>&1 \
            || { cat "$STATE_DIR/initdb.log" >&2; die "initdb failed"; }
        log "initdb: $(since "$t")s"
    fi
    if pg_running; then
        log "postgres already running"
    else
        t=$(now)
        local opts="-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$PGSOCK"
        if [ "$PG_FAST" = 1 ]; then
            opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        fi
        # pg_ctl's log file is opened by the postgres user: create it owned by that user.
        touch "$PG_LOG"; [ "$(id -u)" = 0 ] && chown "$PG_OS_USER": "$PG_LOG"
        as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA" -l "$PG_LOG" -o "$opts" -w -t 60 start >/dev/null \
            || { tail -n 20 "$PG_LOG" >&2; die "postgres did not start (port $PG_PORT taken?)"; }
        log "postgres started on 127.0.0.1:$PG_PORT: $(since "$t")s"
    fi
    # Role and databases (idempotent). The password goes to psql on stdin, not its arguments.
    if [ ! -s "$PGPASSFILE" ]; then
        local password="${PG_PASSWORD:-$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')}"
        case "$password" in *:*|*\\*) die "PG_PASSWORD must not hold ':' or '\\' (the pgpass file's separators)" ;; esac
        ( umask 077; printf '127.0.0.1:*:*:%s:%s\n' "$PG_USER" "$password" >"$PGPASSFILE" )
    fi
    local password; password="$(cut -d: -f5- "$PGPASSFILE")"; password="${password//\'/\'\'}"
    if [ "$(pg_psql -tA -c "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'")" != 1 ]; then
        pg_psql -c "CREATE ROLE \"$PG_USER\" LOGIN"
    fi
    printf "ALTER ROLE \"%s\" PASSWORD '%s';\n" "$PG_USER" "$password" | pg_psql -f -
    local db
    for db in "$PG_DB" "$AUTH_DB"; do
        if [ "$(pg_psql -tA -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
            pg_psql -c "CREATE DATABASE \"$db\" OWNER \"$PG_USER\""
            log "created database '$db' owned by '$PG_USER'"
        fi
    done
}

is_loopback() { case "$1" in 127.*|localhost|::1) return 0 ;; *) return 1 ;; esac; }

# MLflow's basic-auth app: its config (users in their own database) and a Flask secret, both
# private to $STATE_DIR; the admin password from the environment or from its file.
auth_setup() {
    secret_file "$STATE_DIR/flask-secret"
    if [ -z "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ]; then
        secret_file "$ADMIN_PASSWORD_FILE"
        MLFLOW_AUTH_ADMIN_PASSWORD="$(cat "$ADMIN_PASSWORD_FILE")"
    fi
    export MLFLOW_AUTH_ADMIN_PASSWORD
    export MLFLOW_AUTH_ADMIN_USERNAME="${MLFLOW_AUTH_ADMIN_USERNAME:-admin}"
    export MLFLOW_FLASK_SERVER_SECRET_KEY; MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat "$STATE_DIR/flask-secret")"
    export MLFLOW_AUTH_CONFIG_PATH="$STATE_DIR/basic_auth.ini"
    ( umask 077; cat >"$MLFLOW_AUTH_CONFIG_PATH" <<EOF
[mlflow]
default_permission = READ
database_uri = postgresql+psycopg2://$PG_USER@127.0.0.1:$PG_PORT/$AUTH_DB
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
    )
}

start_mlflow() {
    if mlflow_running; then
        log "mlflow already running (pid $(mlflow_pid))"
    else
        command -v "$MLFLOW" >/dev/null || die "mlflow executable '$MLFLOW' not found (set MLFLOW or PATH)"
        if healthy; then die "something else already answers on $TRACKING_URI"; fi
        # What the auth protects must not be readable around it: the artifacts, the log and
        # anything the server writes are private to the user that runs it.
        umask 077
        mkdir -p "$ARTIFACTS"
        chmod 700 "$ARTIFACTS"
        local app=()
        if [ "$AUTH" = 1 ]; then
            auth_setup
            app=(--app-name basic-auth)
        fi
        # setsid: mlflow becomes leader of its own process group, so stop can signal
        # mlflow + uvicorn supervisor + workers + huey job runner together.
        # (In a non-interactive shell a background job is not a group leader, so setsid
        # execs without forking and $! is mlflow's pid == the group id.)
        setsid "$MLFLOW" server "${app[@]}" \
            --backend-store-uri "$BACKEND_URI" \
            --serve-artifacts --artifacts-destination "$ARTIFACTS" \
            --host "$MLFLOW_HOST" --port "$MLFLOW_PORT" --workers "$MLFLOW_WORKERS" \
            >"$MLFLOW_LOG" 2>&1 </dev/null &
        echo $! >"$MLFLOW_PID"
    fi
    local t deadline
    t=$(now); deadline=$(( $(date +%s) + START_TIMEOUT ))
    until healthy; do
        if ! mlflow_running; then tail -n 30 "$MLFLOW_LOG" >&2; rm -f "$MLFLOW_PID"; die "mlflow server exited"; fi
        if [ "$(date +%s)" -ge "$deadline" ]; then tail -n 30 "$MLFLOW_LOG" >&2; stop_mlflow; die "no /health after ${START_TIMEOUT}s"; fi
        sleep 0.3
    done
    log "mlflow /health OK at $TRACKING_URI: $(since "$t")s (pid $(mlflow_pid))"
}

stop_mlflow() {
    local p i
    p="$(mlflow_pid)"
    if [ -n "$p" ] && group_alive "$p"; then
        kill -TERM -- "-$p" 2>/dev/null || true
        for i in $(seq 1 100); do   # up to 10 s for a graceful stop
            group_alive "$p" || break
            sleep 0.1
        done
        if group_alive "$p"; then
            log "mlflow process group $p still alive after 10s: SIGKILL"
            kill -KILL -- "-$p" 2>/dev/null || true
        fi
        log "mlflow stopped"
    fi
    rm -f "$MLFLOW_PID"
}

stop_pg() {
    if [ -s "$PGDATA/PG_VERSION" ] && pg_running; then
        as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >/dev/null
        log "postgres stopped"
    fi
}

status() {
    local rc=0
    if mlflow_running; then
        if healthy; then echo "mlflow: running (pid $(mlflow_pid)) $TRACKING_URI healthy"
        else echo "mlflow: running (pid $(mlflow_pid)) $TRACKING_URI NOT answering /health"; rc=3; fi
    else echo "mlflow: stopped"; rc=3; fi
    if [ -s "$PGDATA/PG_VERSION" ] && pg_running; then echo "postgres: running 127.0.0.1:$PG_PORT db=$PG_DB user=$PG_USER auth=$AUTH"
    else echo "postgres: stopped"; rc=3; fi
    echo "state: $STATE_DIR"
    return $rc
}

case "${1:-}" in
    start)
        T0=$(now)
        if [ "$AUTH" != 1 ] && ! is_loopback "$MLFLOW_HOST"; then
            die "refusing to serve $TRACKING_URI without authentication: anyone who reaches it could delete or overwrite runs; set AUTH=1"
        fi
        start_pg
        start_mlflow
        log "start total: $(since "$T0")s"
        echo "export MLFLOW_TRACKING_URI=$TRACKING_URI"
        if [ "$AUTH" = 1 ]; then
            echo "export MLFLOW_TRACKING_USERNAME=${MLFLOW_AUTH_ADMIN_USERNAME:-admin}"
            if [ -s "$ADMIN_PASSWORD_FILE" ]; then
                echo "export MLFLOW_TRACKING_PASSWORD=\"\$(cat $ADMIN_PASSWORD_FILE)\""
            fi
        fi
        ;;
    stop) stop_mlflow; stop_pg ;;
    status) status ;;
    uri) echo "$TRACKING_URI" ;;
    destroy) stop_mlflow; stop_pg; rm -rf "$STATE_DIR"; log "removed $STATE_DIR" ;;
    *) echo "usage: $0 {start|stop|status|uri|destroy}" >&2; exit 2 ;;
esac
