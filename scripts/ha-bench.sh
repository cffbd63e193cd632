#!/usr/bin/env bash
# Runs ha-bench (Sources/ha-bench) against a throwaway PostgreSQL server: Debian's `postgresql` package, a free
# port, a temporary directory, fsync on (as in production), removed afterwards. As root the server runs as the
# `postgres` user the package creates. Build first:
#   for p in policyd opamp-fleet ha-bench; do swift build -c release --product $p; done
# Usage: scripts/ha-bench.sh [AGENTS] [ha-bench options, e.g. --skip-sqlite --replicas 3]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
[ -x "$bin/initdb" ] || { echo "no PostgreSQL server: apt-get install postgresql" >&2; exit 1; }
directory=$(mktemp -d /tmp/ha-bench-pg.XXXXXX)
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
agents=${1:-30000}
shift || true
.build/release/ha-bench "$agents" --database "postgres://tailplane@127.0.0.1:$port/tailplane?sslmode=disable" "$@"
