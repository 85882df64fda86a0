#!/usr/bin/env bash
# Make Redis and PostgreSQL available to `make test` / `make run`.
#
#   scripts/services.sh up     Use $REDIS_URL / $DATABASE_URL when they answer; otherwise start
#                              private instances under .var/ (installing Debian packages if
#                              needed). Writes .var/services.env (shell `export` lines).
#   scripts/services.sh down   Stop the private instances under .var/. Never touches external ones.
#   scripts/services.sh env    Print .var/services.env.
#
# Status goes to stdout (one line per service); diagnostics and errors go to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
VAR="$ROOT/.var"
ENV_FILE="$VAR/services.env"
REDIS_DIR="$VAR/redis"   # redis.pid, redis.log, port
PG_BASE="$VAR/pg"        # data/ (PGDATA), run/ (unix socket), pg.log
PG_OS_USER=postgres      # the postmaster refuses to run as root, so root runs it as this user

log()  { printf '%s\n' "$*" >&2; }
die()  { printf '%s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
is_root() { [[ $(id -u) -eq 0 ]]; }
rel()  { printf '%s' "${1#"$ROOT"/}"; }              # shorter paths in messages
q()    { printf "'%s'" "${1//\'/\'\\\'\'}"; }          # single-quote for the env file

# A live process: exists and is not a zombie (a slow-reaping init keeps those around for a while).
alive() {
    local st
    [[ $1 =~ ^[0-9]+$ ]] && kill -0 "$1" 2>/dev/null || return 1
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    st=${st##*) }
    [[ ${st%% *} != Z ]]
}

# Serialise concurrent up/down runs (e.g. parallel make targets).
lock() {
    mkdir -p "$VAR"
    have flock || return 0
    exec 9>"$VAR/.lock"   # fd 9: closed (9>&-) when launching daemons, or they would hold the lock
    flock -w 120 9 || die "services: timed out waiting for $(rel "$VAR")/.lock"
}

# A free loopback port: let the kernel pick one (tiny race until the server binds; we retry).
free_port() {
    if have python3; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    else
        local p _
        for _ in {1..50}; do
            p=$((20000 + RANDOM % 40000))
            (: </dev/tcp/127.0.0.1/"$p") 2>/dev/null || { echo "$p"; return 0; }
        done
        return 1
    fi
}

# ---------------------------------------------------------------- packages

APT_UPDATED=0
as_admin() { if is_root; then "$@"; else sudo "$@"; fi; }
apt_install() {
    have apt-get || die "services: missing $*, and no apt-get to install it"
    is_root || have sudo || die "services: missing $*; need root or sudo to install it"
    mkdir -p "$VAR"
    log "services: installing Debian packages: $* (log: .var/apt.log)"
    if [[ $APT_UPDATED == 0 ]]; then
        as_admin apt-get update >>"$VAR/apt.log" 2>&1 || die "services: apt-get update failed, see .var/apt.log"
        APT_UPDATED=1
    fi
    # The postgresql/redis-server packages may auto-start system services; harmless, we use our own.
    as_admin env DEBIAN_FRONTEND=noninteractive apt-get install -y -o DPkg::Lock::Timeout=120 "$@" \
        >>"$VAR/apt.log" 2>&1 || die "services: apt-get install $* failed, see .var/apt.log"
    hash -r
}

# Directory holding pg_ctl + initdb: PATH first, else the highest /usr/lib/postgresql/*/bin
# (Debian does not put the server binaries on PATH).
pg_bindir() {
    local d v
    # An existing cluster must keep using its own major version.
    if v=$(cat "${PG_DATA:-/nonexistent}/PG_VERSION" 2>/dev/null) && [[ -x /usr/lib/postgresql/$v/bin/pg_ctl ]]; then
        echo "/usr/lib/postgresql/$v/bin"; return 0
    fi
    for d in "$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/pg_ctl)")" \
             $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
        if [[ -x $d/pg_ctl && -x $d/initdb ]]; then echo "$d"; return 0; fi
    done
    return 1
}

# ---------------------------------------------------------------- redis

redis_ping() {  # redis_ping URL: true if it answers PONG
    if have redis-cli; then
        [[ $(timeout 5 redis-cli -u "$1" ping 2>/dev/null) == PONG ]]
    else
        python3 - "$1" 2>/dev/null <<'PY'
import socket, sys
from urllib.parse import urlparse, unquote
u = urlparse(sys.argv[1])
s = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout=3)
def cmd(*args):  # RESP array, so passwords with spaces survive
    s.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in (x.encode() for x in args)))
    return s.recv(512)
if u.password:
    cmd("AUTH", *([unquote(u.username)] if u.username else []), unquote(u.password))
sys.exit(0 if cmd("PING").startswith(b"+PONG") else 1)
PY
    fi
}

redis_pid() {  # pid of our private redis-server, if alive
    local pid
    pid=$(cat "$REDIS_DIR/redis.pid" 2>/dev/null) || return 1
    alive "$pid" && grep -qa redis "/proc/$pid/cmdline" 2>/dev/null || return 1
    echo "$pid"
}

redis_running_port() {  # port of a live, answering private instance
    local port
    redis_pid >/dev/null || return 1
    port=$(cat "$REDIS_DIR/port" 2>/dev/null) || return 1
    redis_ping "redis://127.0.0.1:$port/0" || return 1
    echo "$port"
}

redis_start() {  # prints the port
    local port pid try i
    mkdir -p "$REDIS_DIR"
    # A stale process holding our pidfile but not answering: replace it.
    if pid=$(redis_pid); then kill "$pid" 2>/dev/null || true; sleep 0.5; fi
    for try in 1 2 3; do
        port=$(free_port) || die "redis: no free loopback port"
        rm -f "$REDIS_DIR/redis.pid"
        # Dev/test cache: no snapshots while it runs (speed), one on a clean stop (redis_stop) that
        # the next start loads, so `make run` comes back with its game; noeviction so a full cache
        # errors instead of silently dropping keys.
        redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
            --dir "$REDIS_DIR" --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" \
            --save "" --appendonly no --maxmemory-policy noeviction >/dev/null 2>&1 9>&- \
            || die "redis: redis-server failed to start, see .var/redis/redis.log"
        echo "$port" >"$REDIS_DIR/port"
        for i in {1..50}; do
            if redis_ping "redis://127.0.0.1:$port/0"; then echo "$port"; return 0; fi
            # Daemonized: the exit code says nothing, so stop waiting once the process is gone.
            if (( i > 5 )) && ! redis_pid >/dev/null; then break; fi
            sleep 0.1
        done
        log "redis: attempt $try on port $port failed"
    done
    die "redis: private instance did not start, see .var/redis/redis.log"
}

redis_stop() {
    local pid port i
    if ! pid=$(redis_pid); then echo "redis: no private instance running"; return 0; fi
    port=$(cat "$REDIS_DIR/port" 2>/dev/null || true)
    if [[ -n $port ]] && have redis-cli; then
        timeout 30 redis-cli -p "$port" shutdown save >/dev/null 2>&1 || true
    fi
    kill "$pid" 2>/dev/null || true
    for i in {1..50}; do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
    rm -f "$REDIS_DIR/redis.pid"
    echo "redis: stopped private instance"
}

# ---------------------------------------------------------------- postgres

# Strip a SQLAlchemy driver suffix (postgresql+psycopg:// -> postgresql://) for libpq tools.
pg_plain_url() {
    local u=$1
    if [[ $u =~ ^([A-Za-z]+)\+[^:/]*(:.*)$ ]]; then u="${BASH_REMATCH[1]}${BASH_REMATCH[2]}"; fi
    printf '%s' "$u"
}

pg_ping_url() {
    local u; u=$(pg_plain_url "$1")
    if have psql; then PGCONNECT_TIMEOUT=5 psql "$u" -qAtX -c 'select 1' >/dev/null 2>&1
    else pg_isready -q -t 5 -d "$u"
    fi
}

as_pg() {  # run a server command (initdb/pg_ctl) as a non-root user
    if is_root; then (cd / && runuser -u "$PG_OS_USER" -- "$@"); else "$@"; fi
}

ensure_pg_os_user() {
    is_root || return 0
    id -u "$PG_OS_USER" >/dev/null 2>&1 && return 0
    log "postgres: creating system user $PG_OS_USER"
    local grp=(--user-group)
    getent group "$PG_OS_USER" >/dev/null && grp=(--gid "$PG_OS_USER")
    useradd --system "${grp[@]}" --home-dir /var/lib/postgresql --no-create-home \
        --shell /bin/bash "$PG_OS_USER" || die "postgres: could not create the $PG_OS_USER user"
}

# Sets PG_DIR/PG_DATA/PG_SOCK/PG_LOG. With create=1, makes the directories.
pg_paths() {
    local create=${1:-0}
    if [[ ! -e $PG_BASE ]]; then
        [[ $create == 1 ]] || return 1
        mkdir -p "$VAR"
        if is_root && ! runuser -u "$PG_OS_USER" -- test -x "$VAR" 2>/dev/null; then
            # The postgres user cannot reach the repo (e.g. it lives under /root): keep the
            # cluster in /var/tmp and link it from .var/pg.
            local alt
            alt="/var/tmp/ftl-pg-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"
            mkdir -p "$alt"
            ln -sfn "$alt" "$PG_BASE"
        else
            mkdir -p "$PG_BASE"
        fi
    fi
    PG_DIR=$(realpath "$PG_BASE")   # the postgres user must not need to resolve the symlink
    PG_DATA=$PG_DIR/data PG_SOCK=$PG_DIR/run PG_LOG=$PG_DIR/pg.log
    if [[ $create == 1 ]]; then
        mkdir -p "$PG_SOCK"
        touch "$PG_LOG"
        if is_root; then chown "$PG_OS_USER": "$PG_DIR" "$PG_SOCK" "$PG_LOG"; fi
    fi
}

pg_running_port() {  # port of a live, answering private cluster (from postmaster.pid)
    local pid port _
    [[ -r $PG_DATA/postmaster.pid ]] || return 1
    { read -r pid; read -r _; read -r _; read -r port; } <"$PG_DATA/postmaster.pid" || return 1
    alive "$pid" || return 1
    pg_isready -q -t 5 -h 127.0.0.1 -p "$port" || return 1
    echo "$port"
}

pg_start() {  # prints the port
    local bin ver="" port try
    bin=$(pg_bindir) || die "postgres: initdb/pg_ctl not found"
    if [[ ! -s $PG_DATA/PG_VERSION ]]; then
        log "postgres: initdb $(rel "$PG_BASE")/data"
        rm -rf "$PG_DATA"   # leftovers of an interrupted initdb
        as_pg "$bin/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 --no-sync \
            >>"$PG_LOG" 2>&1 || die "postgres: initdb failed, see $(rel "$PG_BASE")/pg.log"
    fi
    [[ $("$bin/pg_ctl" --version) =~ ([0-9]+) ]] && ver=${BASH_REMATCH[1]}
    [[ $ver == "$(cat "$PG_DATA/PG_VERSION")" ]] || die "postgres: $(rel "$PG_BASE")/data is from" \
        "PostgreSQL $(cat "$PG_DATA/PG_VERSION") but $bin is $ver; run 'scripts/services.sh down' and remove .var/pg"
    # Our settings live in ftl.conf, rewritten on every start (the port changes).
    grep -qF "include_if_exists = 'ftl.conf'" "$PG_DATA/postgresql.conf" \
        || echo "include_if_exists = 'ftl.conf'" >>"$PG_DATA/postgresql.conf"
    for try in 1 2 3; do
        port=$(free_port) || die "postgres: no free loopback port"
        # Dev/test cluster: durability traded for speed; loopback only; socket under .var.
        cat >"$PG_DATA/ftl.conf" <<EOF
# Written by scripts/services.sh on every start; edits are lost.
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_SOCK'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
        if is_root; then chown "$PG_OS_USER": "$PG_DATA/ftl.conf"; fi
        if as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start >>"$PG_LOG" 2>&1 9>&-; then
            echo "$port"; return 0
        fi
        log "postgres: attempt $try on port $port failed"
    done
    die "postgres: private cluster did not start, see $(rel "$PG_BASE")/pg.log"
}

pg_ensure_db() {  # role + database "ftl" (idempotent)
    PGCONNECT_TIMEOUT=5 psql -h 127.0.0.1 -p "$1" -U postgres -d postgres -qAtX -v ON_ERROR_STOP=1 \
        >/dev/null 2>>"$PG_LOG" <<'SQL' || die "postgres: could not create role/database ftl, see $(rel "$PG_BASE")/pg.log"
SELECT 'CREATE ROLE ftl LOGIN SUPERUSER' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ftl')\gexec
SELECT 'CREATE DATABASE ftl OWNER ftl' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'ftl')\gexec
SQL
}

pg_stop() {
    local bin pid _
    if ! pg_paths 0 || [[ ! -r $PG_DATA/postmaster.pid ]]; then
        echo "postgres: no private instance running"; return 0
    fi
    read -r pid <"$PG_DATA/postmaster.pid" || true
    if ! alive "$pid"; then
        echo "postgres: no private instance running"; return 0
    fi
    bin=$(pg_bindir) || die "postgres: pg_ctl not found, cannot stop pid $pid"
    as_pg "$bin/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >>"$PG_LOG" 2>&1 \
        || die "postgres: pg_ctl stop failed, see $(rel "$PG_BASE")/pg.log"
    echo "postgres: stopped private instance"
}

# ---------------------------------------------------------------- commands

cmd_up() {
    lock
    local redis_url pg_url started_redis=0 started_pg=0 port pkgs=()

    # Install whatever is missing in one apt run. Clients are always needed (checks, createdb);
    # servers only when no URL is given (otherwise we decide after checking the URL).
    { have psql && have pg_isready; } || pkgs+=(postgresql-client)
    have redis-cli || pkgs+=(redis-tools)
    if [[ -z ${REDIS_URL:-} ]] && ! have redis-server; then pkgs+=(redis-server); fi
    if [[ -z ${DATABASE_URL:-} ]] && ! pg_bindir >/dev/null; then pkgs+=(postgresql); fi
    if (( ${#pkgs[@]} )); then apt_install "${pkgs[@]}"; fi

    # ---- Redis
    if [[ -n ${REDIS_URL:-} ]] && redis_ping "$REDIS_URL"; then
        redis_url=$REDIS_URL
        echo "redis: using REDIS_URL"
    else
        if [[ -n ${REDIS_URL:-} ]]; then log "redis: REDIS_URL does not answer, using a private instance"; fi
        if port=$(redis_running_port); then
            echo "redis: reusing private instance on 127.0.0.1:$port"
        else
            have redis-server || apt_install redis-server
            port=$(redis_start)
            started_redis=1
            echo "redis: started private instance on 127.0.0.1:$port"
        fi
        redis_url="redis://127.0.0.1:$port/0"
    fi

    # ---- PostgreSQL
    if [[ -n ${DATABASE_URL:-} ]] && pg_ping_url "$DATABASE_URL"; then
        pg_url=$DATABASE_URL
        echo "postgres: using DATABASE_URL"
    else
        if [[ -n ${DATABASE_URL:-} ]]; then log "postgres: DATABASE_URL does not answer, using a private instance"; fi
        pg_bindir >/dev/null || apt_install postgresql
        ensure_pg_os_user
        pg_paths 1
        if port=$(pg_running_port); then
            echo "postgres: reusing private instance on 127.0.0.1:$port"
        else
            port=$(pg_start)
            started_pg=1
            echo "postgres: started private instance on 127.0.0.1:$port"
        fi
        pg_ensure_db "$port"
        pg_url="postgresql+psycopg://ftl@127.0.0.1:$port/ftl"
    fi

    # Atomic write so a concurrent `source` never sees half a file.
    {
        echo "# Written by scripts/services.sh up; source it: . .var/services.env"
        echo "export REDIS_URL=$(q "$redis_url")"
        echo "export DATABASE_URL=$(q "$pg_url")"
        echo "export FTL_STARTED_REDIS=$started_redis"
        echo "export FTL_STARTED_PG=$started_pg"
    } >"$ENV_FILE.tmp"
    mv -f "$ENV_FILE.tmp" "$ENV_FILE"
}

cmd_down() {
    if [[ ! -d $VAR ]]; then
        echo "redis: no private instance running"
        echo "postgres: no private instance running"
        return 0
    fi
    lock
    redis_stop
    pg_stop
}

cmd_env() {
    [[ -r $ENV_FILE ]] || die "services: $(rel "$ENV_FILE") not found; run 'scripts/services.sh up' first"
    cat "$ENV_FILE"
}

case "${1:-}" in
    up)   cmd_up ;;
    down) cmd_down ;;
    env)  cmd_env ;;
    *)    die "usage: scripts/services.sh up|down|env" ;;
esac
