#!/usr/bin/env bash
# Restore FTL onto an empty machine from scripts/backup.sh's backups (docs/operations.md,
# "Backups and the disaster drill"; decision 0156):
#
#   scripts/restore.sh BACKUP_DIR DATA_DIR PORT [TARGET_TIME]
#
# 1. unpacks the newest base backup of BACKUP_DIR/base (or $BASE_BACKUP) into DATA_DIR (absent
#    or empty), 2. replays the WAL of BACKUP_DIR/wal (archive_command) and BACKUP_DIR/stream
#    (pg_receivewal, its unfinished segment included) up to TARGET_TIME (an ISO-8601
#    time with zone; default: the end of the archive) and promotes, on 127.0.0.1:PORT,
#    3. `ftl migrate` (a no-op at head; brings an older backup to this code's schema),
#    4. `ftl recover` into the Redis of $REDIS_URL (it must be empty or hold only what is lost),
#    5. `ftl audit`. Prints one line per step with its duration, then a JSON summary on stdout.
#
# Needs the PostgreSQL server binaries of the backup's major version; run as root it runs the
# server as the `postgres` user. DATABASE_URL for steps 3–5 is postgresql://$RESTORE_DB_USER
# (default ftl)@127.0.0.1:PORT/ftl. The restored server does not archive (archive_mode = off):
# point it at a new BACKUP_DIR before it serves, then take a base backup.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
PG_OS_USER=postgres

die() { printf 'restore: %s\n' "$*" >&2; exit 1; }
say() { printf 'restore: %s\n' "$*" >&2; }
now_ms() { date +%s%3N; }
as_pg() { if [[ $(id -u) -eq 0 ]]; then (cd / && runuser -u "$PG_OS_USER" -- "$@"); else "$@"; fi; }

pg_bindir() {  # the server binaries: pg_ctl on PATH (through its symlink), else the newest Debian
    local d
    for d in "$(dirname "$(readlink -f "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/pg_ctl)")")" \
             $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
        if [[ -x $d/pg_ctl && -x $d/postgres ]]; then echo "$d"; return 0; fi
    done
    return 1
}

backup_dir=${1:?usage: restore.sh BACKUP_DIR DATA_DIR PORT [TARGET_TIME]}
data=${2:?usage: restore.sh BACKUP_DIR DATA_DIR PORT [TARGET_TIME]}
port=${3:?usage: restore.sh BACKUP_DIR DATA_DIR PORT [TARGET_TIME]}
target=${4:-}
backup_dir=$(realpath "$backup_dir")
[[ -d $backup_dir/wal ]] || die "$backup_dir/wal is missing: not a scripts/backup.sh directory"
base=${BASE_BACKUP:-$(ls -d "$backup_dir"/base/*/ 2>/dev/null | sort | tail -n 1)}
[[ -n $base && -f $base/base.tar.gz ]] || die "no base backup under $backup_dir/base"
[[ ! -e $data || -z $(ls -A "$data") ]] || die "$data is not empty"
[[ -n ${REDIS_URL:-} ]] || die "REDIS_URL is not set (ftl recover rebuilds that Redis)"
bin=$(pg_bindir) || die "no PostgreSQL server binaries (pg_ctl, postgres)"
ftl=$ROOT/.venv/bin/ftl
[[ -x $ftl ]] || ftl=$(command -v ftl) || die "no ftl command (scripts/venv.sh)"

started=$(now_ms)
mkdir -p "$data"
data=$(realpath "$data")
tar -xzf "$base/base.tar.gz" -C "$data"
mkdir -p "$data/pg_wal"
if [[ -f $base/pg_wal.tar.gz ]]; then tar -xzf "$base/pg_wal.tar.gz" -C "$data/pg_wal"; fi
# The segment pg_receivewal was writing (backup.sh stream): recovery reads it from pg_wal once
# restore_command finds no whole segment of that name, so WAL up to the loss is replayed.
partial=$(ls "$backup_dir"/stream/*.partial 2>/dev/null | sort | tail -n 1 || true)
if [[ -n $partial ]]; then
    name=$(basename "$partial" .partial)
    cp "$partial" "$data/pg_wal/$name"
fi
rm -f "$data/standby.signal" "$data/postmaster.pid"
# Later lines of postgresql.auto.conf win over the primary's own settings copied with the base.
{
    echo "# Written by scripts/restore.sh"
    echo "port = $port"
    echo "listen_addresses = '127.0.0.1'"
    echo "unix_socket_directories = ''"
    echo "archive_mode = off"
    # A segment from the archive (archive_command) or else from the stream (pg_receivewal).
    echo "restore_command = 'cp \"$backup_dir/wal/%f\" \"%p\" 2>/dev/null || cp \"$backup_dir/stream/%f\" \"%p\"'"
    if [[ -n $target ]]; then echo "recovery_target_time = '$target'"; fi
    echo "recovery_target_action = 'promote'"
} >>"$data/postgresql.auto.conf"
touch "$data/recovery.signal"
if [[ $(id -u) -eq 0 ]]; then chown -R "$PG_OS_USER": "$data"; fi
chmod 700 "$data"
say "unpacked $(basename "$base") in $(($(now_ms) - started)) ms"

log="$data.log"
touch "$log"
if [[ $(id -u) -eq 0 ]]; then chown "$PG_OS_USER": "$log"; fi
as_pg "$bin/pg_ctl" -D "$data" -l "$log" -w -t 3600 start >/dev/null || die "the server did not start, see $log"
url="postgresql://${RESTORE_DB_USER:-ftl}@127.0.0.1:$port/ftl"
# Recovery ends with the promotion: the server then accepts writes.
until [[ $(psql "$url" -qAtX -c 'SELECT pg_is_in_recovery()' 2>/dev/null) == f ]]; do
    grep -q 'FATAL' "$log" && die "recovery failed, see $log"
    sleep 0.2
done
replayed=$(psql "$url" -qAtX -c "SELECT coalesce(to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), '')")
restored=$(now_ms)
say "replayed the archive and promoted in $((restored - started)) ms; last transaction replayed: ${replayed:-none}"

export DATABASE_URL="postgresql+psycopg://${RESTORE_DB_USER:-ftl}@127.0.0.1:$port/ftl"
"$ftl" migrate >&2 || die "ftl migrate failed"
migrated=$(now_ms)
say "migrate in $((migrated - restored)) ms"
"$ftl" recover >&2 || die "ftl recover failed"
recovered=$(now_ms)
say "recover in $((recovered - migrated)) ms"
audit_rc=0
"$ftl" audit >&2 || audit_rc=$?
say "audit exit $audit_rc; total $((recovered - started)) ms to a serving primary and hot state"
printf '{"base": "%s", "lastReplayed": "%s", "restoreMs": %d, "migrateMs": %d, "recoverMs": %d, "totalMs": %d, "auditExit": %d}\n' \
    "$(basename "$base")" "$replayed" $((restored - started)) $((migrated - restored)) \
    $((recovered - migrated)) $((recovered - started)) "$audit_rc"
exit "$audit_rc"
