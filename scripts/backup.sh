#!/usr/bin/env bash
# Backups of the PostgreSQL primary: base backups plus the WAL archive (docs/operations.md,
# "Backups and the disaster drill"; decision 0156).
#
#   scripts/backup.sh base BACKUP_DIR        Take a base backup of $DATABASE_URL (a role with
#                                            REPLICATION) into BACKUP_DIR/base/<UTC time>/ and
#                                            print that directory. Run it daily from cron.
#   scripts/backup.sh wal PATH NAME BACKUP_DIR
#                                            The primary's archive_command: copy one finished
#                                            WAL segment into BACKUP_DIR/wal/, durably, never
#                                            overwriting a different file. In postgresql.conf:
#       archive_mode = on
#       archive_timeout = 10
#       archive_command = '/srv/ftl/scripts/backup.sh wal %p %f /backups/ftl'
#   scripts/backup.sh stream BACKUP_DIR      Stream the WAL as it is written into BACKUP_DIR/stream/
#                                            (pg_receivewal through the replication slot
#                                            ftl_backup, made if missing; runs until stopped):
#                                            a lost primary then loses under a second, not up to
#                                            archive_timeout. Run it as a service on the backup
#                                            host. NOTE: while it is down the slot keeps WAL on the
#                                            primary; watch pg_replication_slots or drop the slot.
#
# BACKUP_DIR must be writable by the user the server runs as (postgres) and should be another
# disk or a mounted bucket: a backup on the primary's disk dies with it.
set -euo pipefail

die() { printf 'backup: %s\n' "$*" >&2; exit 1; }

# libpq wants postgresql://, the app's URL may name the driver (postgresql+psycopg://).
plain_url() { local u=$1; [[ $u =~ ^([A-Za-z]+)\+[^:/]*(:.*)$ ]] && u="${BASH_REMATCH[1]}${BASH_REMATCH[2]}"; printf '%s' "$u"; }

cmd_base() {
    local dir=${1:?usage: backup.sh base BACKUP_DIR} target started
    [[ -n ${DATABASE_URL:-} ]] || die "DATABASE_URL is not set"
    target="$dir/base/$(date -u +%Y%m%dT%H%M%SZ)"
    mkdir -p "$dir/base" "$dir/wal"
    started=$(date +%s%3N)
    # Tar format, compressed; -X stream puts the WAL the backup itself needs beside it, so the
    # base restores on its own even before the archive has the segments (-c fast: checkpoint now).
    pg_basebackup -d "$(plain_url "$DATABASE_URL")" -D "$target" -F tar -z -X stream -c fast \
        --manifest-checksums=SHA256 >&2 || die "pg_basebackup failed"
    printf 'backup: base %s (%s bytes) in %d ms\n' "$target" "$(du -sb "$target" | cut -f1)" \
        $(($(date +%s%3N) - started)) >&2
    echo "$target"
}

cmd_wal() {
    local path=${1:?usage: backup.sh wal PATH NAME BACKUP_DIR} name=${2:?} dir=${3:?} wal
    wal="$dir/wal"
    if [[ -e $wal/$name ]]; then
        # Archiving again after a crash between copy and report: fine when it is the same file.
        cmp -s "$path" "$wal/$name" && exit 0
        die "$wal/$name exists and differs from $path"
    fi
    mkdir -p "$wal"
    cp "$path" "$wal/$name.tmp"
    sync "$wal/$name.tmp"
    mv "$wal/$name.tmp" "$wal/$name"
    sync "$wal"
}

cmd_stream() {
    local dir=${1:?usage: backup.sh stream BACKUP_DIR} url
    [[ -n ${DATABASE_URL:-} ]] || die "DATABASE_URL is not set"
    url=$(plain_url "$DATABASE_URL")
    mkdir -p "$dir/stream"
    pg_receivewal -d "$url" --slot ftl_backup --create-slot --if-not-exists >&2 \
        || die "could not create the replication slot ftl_backup"
    # --synchronous: each piece of WAL is on disk here as soon as it arrives.
    exec pg_receivewal -d "$url" -D "$dir/stream" --slot ftl_backup --synchronous --no-loop
}

case "${1:-}" in
    base)   shift; cmd_base "$@" ;;
    wal)    shift; cmd_wal "$@" ;;
    stream) shift; cmd_stream "$@" ;;
    *)      die "usage: scripts/backup.sh base BACKUP_DIR | wal PATH NAME BACKUP_DIR | stream BACKUP_DIR" ;;
esac
