#!/usr/bin/env bash
# Runs ha-bench (Sources/ha-bench) against a throwaway PostgreSQL server (scripts/with-postgres.sh). Build first:
#   for p in policyd opamp-fleet ha-bench; do swift build -c release --product $p; done
# Usage: scripts/ha-bench.sh [AGENTS] [ha-bench options, e.g. --skip-sqlite --replicas 3]
set -euo pipefail
cd "$(dirname "$0")/.."
agents=${1:-30000}
shift || true
exec scripts/with-postgres.sh sh -c '.build/release/ha-bench "$0" --database "$DATABASE_URL" "$@"' "$agents" "$@"
