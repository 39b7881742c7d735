#!/usr/bin/env bash
# Builds the sample releases golive deploys in tests and the demo:
#   $OUT/sampleapp-v1.tar.gz, -v2 (healthy), -v3 (broken: FAIL_HEALTH marker),
#   -v4 (healthy probe, but 5% of requests to / answer 500: FAIL_RATE marker)
#   and -v5 (healthy, but / takes 300 ms longer: LATENCY marker), each holding
#   bin/sampleapp and VERSION; $OUT/ledger-v1/v2.tar.gz (with a
#   database migration, see below); plus $OUT/SHA256SUMS.
# Reproducible-ish: static trimmed build, sorted entries, mtime 0, uid/gid 0,
# gzip without name/timestamp. Usage: mkreleases.sh [OUT_DIR] (default dist).
set -euo pipefail

out=${1:-dist}
go=${GO:-go}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for v in v1 v2 v3 v4 v5; do
	root="$work/sampleapp-$v"
	mkdir -p "$root/bin"
	(cd "$repo" && CGO_ENABLED=0 "$go" build -trimpath -buildvcs=false \
		-ldflags "-s -w -X main.version=$v" -o "$root/bin/sampleapp" ./cmd/sampleapp)
	echo "$v" >"$root/VERSION"
	if [[ $v == v3 ]]; then
		echo "v3 is deliberately broken: /healthz answers 500" >"$root/FAIL_HEALTH"
	fi
	if [[ $v == v4 ]]; then
		echo "0.05" >"$root/FAIL_RATE" # every 20th request to / answers 500; /healthz stays 200
	fi
	if [[ $v == v5 ]]; then
		echo "300ms" >"$root/LATENCY" # added to every request to /
	fi
	chmod -R u=rwX,go=rX "$root"
	tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
		-C "$root" -cf - . | gzip -9n >"$out/sampleapp-$v.tar.gz"
done

# ledger-v1 and -v2: the sample app with a database migration (bin/migrate,
# run by the agent after a verified backup with the service's env file,
# DATABASE_URL, in its environment): v1 creates and fills the accounts
# table, v2 adds a column with a default (expand: v1's binary still works).
for v in v1 v2; do
	root="$work/ledger-$v"
	mkdir -p "$root/bin"
	cp "$work/sampleapp-$v/bin/sampleapp" "$root/bin/sampleapp"
	echo "ledger-$v" >"$root/VERSION"
	if [[ $v == v1 ]]; then
		sql="CREATE TABLE IF NOT EXISTS accounts (id serial PRIMARY KEY, owner text NOT NULL, balance_cents bigint NOT NULL); INSERT INTO accounts (owner, balance_cents) SELECT 'owner-' || g, g * 100 FROM generate_series(1, 1000) g WHERE NOT EXISTS (SELECT 1 FROM accounts);"
	else
		sql="ALTER TABLE accounts ADD COLUMN IF NOT EXISTS currency text NOT NULL DEFAULT 'EUR'; UPDATE accounts SET balance_cents = balance_cents + 1 WHERE id <= 10;"
	fi
	printf '#!/bin/sh\n# ledger-%s migration (see mkreleases.sh)\nset -eu\nexec psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -q -c "%s"\n' "$v" "$sql" >"$root/bin/migrate"
	chmod 755 "$root/bin/migrate"
	chmod -R u=rwX,go=rX "$root"
	tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
		-C "$root" -cf - . | gzip -9n >"$out/ledger-$v.tar.gz"
done

(cd "$out" && sha256sum sampleapp-v1.tar.gz sampleapp-v2.tar.gz sampleapp-v3.tar.gz sampleapp-v4.tar.gz sampleapp-v5.tar.gz ledger-v1.tar.gz ledger-v2.tar.gz >SHA256SUMS)
echo "wrote $out/sampleapp-v{1,2,3,4,5}.tar.gz, $out/ledger-v{1,2}.tar.gz and $out/SHA256SUMS"
