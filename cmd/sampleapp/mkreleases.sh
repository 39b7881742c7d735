#!/usr/bin/env bash
# Builds the sample releases golive deploys in tests and the demo:
#   $OUT/sampleapp-v1.tar.gz, -v2 (healthy) and -v3 (broken: FAIL_HEALTH marker),
#   each holding bin/sampleapp and VERSION, plus $OUT/SHA256SUMS.
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

for v in v1 v2 v3; do
	root="$work/sampleapp-$v"
	mkdir -p "$root/bin"
	(cd "$repo" && CGO_ENABLED=0 "$go" build -trimpath -buildvcs=false \
		-ldflags "-s -w -X main.version=$v" -o "$root/bin/sampleapp" ./cmd/sampleapp)
	echo "$v" >"$root/VERSION"
	if [[ $v == v3 ]]; then
		echo "v3 is deliberately broken: /healthz answers 500" >"$root/FAIL_HEALTH"
	fi
	chmod -R u=rwX,go=rX "$root"
	tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
		-C "$root" -cf - . | gzip -9n >"$out/sampleapp-$v.tar.gz"
done

(cd "$out" && sha256sum sampleapp-v1.tar.gz sampleapp-v2.tar.gz sampleapp-v3.tar.gz >SHA256SUMS)
echo "wrote $out/sampleapp-v{1,2,3}.tar.gz and $out/SHA256SUMS"
