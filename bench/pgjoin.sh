#!/usr/bin/env bash
# pgjoin.sh: what PostgreSQL alone spends on the broker's miss query
# (a session joined with its user, storage/sqlstore getSessionAndUserQuery)
# against the harness's database floor (one primary-key SELECT on
# sessions), with no broker, Go driver or HTTP in the way. It seeds a
# scratch schema with the broker's tables (1,000,000 sessions of 250,000
# users, as the harness's largest N), runs pgbench on both queries in
# interleaved rounds, prints transactions per second and their ratio, and
# drops the schema.
#
#   bash bench/pgjoin.sh [rounds]        (default 3 rounds of 6 s per query)
#
# Needs pgbench (Debian's postgresql package) and the database of
# BROKER_TEST_DATABASE_URL (default the test server).
set -euo pipefail
rounds=${1:-3}
url=${BROKER_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
pgbench=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | tail -1)
[ -x "$pgbench" ] || { echo "pgjoin: pgbench not found (apt-get install -y postgresql)" >&2; exit 1; }
schema=pgjoin_$$
tmp=$(mktemp -d)
cleanup() { psql "$url" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT

sed -n '/+goose Up/,/+goose Down/p' "$(dirname "$0")/../storage/sqlstore/migrations/postgres/00001_init.sql" |
	grep -v '^-- +goose' > "$tmp/schema.sql"
echo "seeding $schema…"
psql "$url" -q -v ON_ERROR_STOP=1 <<SQL
CREATE SCHEMA $schema;
SET search_path = $schema;
\i $tmp/schema.sql
INSERT INTO users (id, email, email_verified_at, attributes, created_at, updated_at)
	SELECT 'user' || lpad(i::text, 10, '0'), 'user' || i || '@bench.example', now(), '{"role":"member"}', now(), now()
	FROM generate_series(1, 250000) i;
INSERT INTO sessions (id, user_id, active_expires, idle_expires, created_at, authenticated_at, last_seen_at, user_agent, ip)
	SELECT encode(sha256(('tok' || i)::bytea), 'hex'), 'user' || lpad((1 + (i - 1) / 4)::text, 10, '0'),
		now() + interval '30 days', now() + interval '30 days', now(), now(), now() + interval '1 hour', 'wrk', '127.0.0.1'
	FROM generate_series(1, 1000000) i;
VACUUM ANALYZE;
SQL

key="encode(sha256(('tok' || :i)::bytea), 'hex')"
cat > "$tmp/floor.sql" <<SQL
\set i random(1, 1000000)
SELECT id, user_id, active_expires, idle_expires, created_at, authenticated_at, last_seen_at, user_agent, ip, attributes FROM $schema.sessions WHERE id = $key;
SQL
cat > "$tmp/join.sql" <<SQL
\set i random(1, 1000000)
SELECT s.id, s.user_id, s.active_expires, s.idle_expires, s.created_at, s.authenticated_at, s.last_seen_at, s.user_agent, s.ip, s.attributes, u.id, u.username, u.email, u.email_verified_at, u.name, u.image, u.attributes, u.webauthn_handle, u.created_at, u.updated_at FROM $schema.sessions s JOIN $schema.users u ON u.id = s.user_id WHERE s.id = $key;
SQL
tps() { "$pgbench" "$url" -n -M prepared -c 8 -j 2 -T 6 -f "$tmp/$1.sql" 2>&1 | awk '/^tps/ {print int($3)}'; }
for r in $(seq 1 "$rounds"); do
	f=$(tps floor); j=$(tps join)
	awk -v r="$r" -v f="$f" -v j="$j" 'BEGIN { printf "round %d: floor %d tps, join %d tps, join / floor %.2f\n", r, f, j, j / f }'
done
