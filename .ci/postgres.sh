#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the tests and print its URL (the only stdout line):
#
#   export RAYSYS_TEST_POSTGRES_URL=$(bash .ci/postgres.sh)
#
# Installs Debian's `postgresql` package if no server binaries are found, initialises a private
# cluster in $RAYSYS_PG_DATA (default /tmp/raysys-pg, owned by the `postgres` user), listens on
# 127.0.0.1:$RAYSYS_PG_PORT (default 54329) with its socket in the data dir, and makes the role
# and database raysys/raysys. The role's password is random, kept in $DATA/raysys.password
# (mode 600), and printed nowhere but in the URL on stdout; it never appears on a command line.
# fsync is off: this is test data only.
# Idempotent: a second run reuses the server and the password it made. Stop it with
#   runuser -u postgres -- /usr/lib/postgresql/*/bin/pg_ctl -D /tmp/raysys-pg stop
set -euo pipefail

PORT="${RAYSYS_PG_PORT:-54329}"
DATA="${RAYSYS_PG_DATA:-/tmp/raysys-pg}"

log() { echo "postgres.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

find_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n "$dir" && -x "$dir/initdb" ]]; then echo "$dir"; return; fi
    if command -v initdb >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v initdb)")"; fi
}

BIN=$(find_bindir)
if [[ -z "$BIN" ]]; then
    [[ $(id -u) == 0 ]] || die "PostgreSQL is not installed and installing it needs root"
    log "installing PostgreSQL from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql; } >&2 \
        || die "apt-get install postgresql failed"
    BIN=$(find_bindir)
    [[ -n "$BIN" ]] || die "postgresql installed but initdb not found under /usr/lib/postgresql"
fi
log "using $BIN"

# initdb/postgres refuse to run as root: as root run them as `postgres`, else as ourselves.
if [[ $(id -u) == 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres \
        || die "cannot create the postgres user"
    as_pg() { (cd / && runuser -u postgres -- "$@"); }
    OWNER=postgres
else
    as_pg() { "$@"; }
    OWNER=$(id -un)
fi

running() { as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

if running; then
    # Reuse the server: its port is line 4 of postmaster.pid.
    PORT=$(sed -n 4p "$DATA/postmaster.pid")
    log "reusing the server in $DATA on port $PORT"
else
    if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 2; then
        die "port $PORT is taken by another server; set RAYSYS_PG_PORT to a free port"
    fi
    if [[ ! -f "$DATA/PG_VERSION" || $(cat "$DATA/PG_VERSION" 2>/dev/null) != $("$BIN/postgres" -V | grep -oE "[0-9]+" | head -n 1) ]]; then
        log "initialising a cluster in $DATA"
        rm -rf "$DATA"
        mkdir -p "$DATA"
        chown "$OWNER" "$DATA"
        chmod 700 "$DATA"
        as_pg "$BIN/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C \
            --auth-local=trust --auth-host=scram-sha-256 --no-sync >&2 || die "initdb failed"
        cat >>"$DATA/postgresql.conf" <<EOF
# raysys test server (.ci/postgres.sh)
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DATA'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    fi
    log "starting the server on 127.0.0.1:$PORT"
    if ! as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 -o "-p $PORT" start >&2; then
        tail -n 20 "$DATA/server.log" >&2 || true
        die "the server did not start (log: $DATA/server.log)"
    fi
fi

psql_admin() {
    "$BIN/psql" -X -q -h "$DATA" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -tA "$@"
}
PASSWORD_FILE="$DATA/raysys.password"
if [[ ! -s "$PASSWORD_FILE" ]]; then  # hex: nothing to escape in SQL or in the URL
    (umask 077 && od -An -N18 -tx1 /dev/urandom | tr -d ' \n' >"$PASSWORD_FILE") \
        || die "cannot write $PASSWORD_FILE"
fi
PASSWORD=$(cat "$PASSWORD_FILE")
if [[ -z $(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'raysys'") ]]; then
    psql_admin -c "CREATE ROLE raysys LOGIN CREATEDB" >&2 || die "cannot create role"
fi
# on stdin, not in psql's arguments (which any local user can list)
psql_admin <<<"ALTER ROLE raysys LOGIN PASSWORD '$PASSWORD'" >&2 || die "cannot set the password"
if [[ -z $(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'raysys'") ]]; then
    psql_admin -c "CREATE DATABASE raysys OWNER raysys" >&2 || die "cannot create database"
fi

[[ $(PGPASSWORD="$PASSWORD" "$BIN/psql" -X -tA -h 127.0.0.1 -p "$PORT" -U raysys -d raysys \
      -c "SELECT 1" 2>&1) == 1 ]] \
    || die "cannot log in over TCP as raysys on 127.0.0.1:$PORT"
echo "postgresql://raysys:$PASSWORD@127.0.0.1:$PORT/raysys"
