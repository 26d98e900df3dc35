#!/usr/bin/env bash
# Start PostgreSQL on loopback for the multi-worker tests and print the storage URL.
# Installs the server first where the machine lacks it (needs root, as in CI).
set -euo pipefail
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
version=$(ls /usr/lib/postgresql | sort -n | tail -1)
pg_lsclusters -h | grep -q "^$version *main" || pg_createcluster "$version" main >&2
pg_ctlcluster "$version" main status >/dev/null 2>&1 || pg_ctlcluster "$version" main start >&2
for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 && break; sleep 1; done
pg_isready -q -h 127.0.0.1
psql_as_postgres() { su postgres -c "psql -qtA -c \"$1\""; }
[ "$(psql_as_postgres "SELECT 1 FROM pg_roles WHERE rolname='autoprune'")" = 1 ] ||
  psql_as_postgres "CREATE ROLE autoprune LOGIN PASSWORD 'autoprune'" >&2
[ "$(psql_as_postgres "SELECT 1 FROM pg_database WHERE datname='autoprune_test'")" = 1 ] ||
  su postgres -c "createdb -O autoprune autoprune_test" >&2
echo "postgresql+psycopg://autoprune:autoprune@127.0.0.1:5432/autoprune_test"
