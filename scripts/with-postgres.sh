#!/usr/bin/env bash
# Runs a command against a throwaway PostgreSQL server: Debian's `postgresql` package, a free port, a temporary
# directory, fsync on (as in production), removed afterwards. As root the server runs as the `postgres` user
# the package creates. The command finds the database's URL in DATABASE_URL.
# Usage: scripts/with-postgres.sh COMMAND [ARGUMENTS...]
#   e.g. scripts/with-postgres.sh sh -c '.build/release/store-bench 30000 --database "$DATABASE_URL"'
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
[ -x "$bin/initdb" ] || { echo "no PostgreSQL server: apt-get install postgresql" >&2; exit 1; }
directory=$(mktemp -d /tmp/with-postgres.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_server=()
if [ "$(id -u)" = 0 ]; then
    chown postgres:postgres "$directory"
    as_server=(runuser -u postgres --)
fi
cleanup() {
    "${as_server[@]}" "$bin/pg_ctl" -D "$directory/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$directory"
}
trap cleanup EXIT
"${as_server[@]}" "$bin/initdb" -D "$directory/data" -U tailplane --auth=trust -E UTF8 >/dev/null
"${as_server[@]}" "$bin/pg_ctl" -D "$directory/data" -l "$directory/server.log" -w \
    -o "-p $port -k $directory -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
"${as_server[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U tailplane tailplane
export DATABASE_URL="postgres://tailplane@127.0.0.1:$port/tailplane?sslmode=disable"
"$@"
