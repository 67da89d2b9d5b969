#!/usr/bin/env bash
# Builds health-check (scripts/health-tools/main.go): kstatus from sigs.k8s.io/cli-utils and
# CEL from github.com/google/cel-go, the libraries Flux and kpt use to judge objects, so tests
# can check what they conclude about real objects. Go modules from the module proxy, cached
# outside the repository per source hash; idempotent. Prints the binary's path.
set -euo pipefail

CLI_UTILS_VERSION="${CLI_UTILS_VERSION:-v0.37.2}"
CEL_GO_VERSION="${CEL_GO_VERSION:-v0.26.1}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_ROOT="${LIBVIRT_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/libvirt-operator}"
HASH="$( (cat "$HERE/health-tools/main.go"; echo "$CLI_UTILS_VERSION $CEL_GO_VERSION") | sha256sum | cut -c1-12)"
DEST="$CACHE_ROOT/health-tools/$HASH"

die() { echo "build-health-tools: $*" >&2; exit 1; }

if [[ -x "$DEST/health-check" ]]; then
  echo "$DEST/health-check"
  exit 0
fi
GO="${GO:-}"
if [[ -z "$GO" ]]; then
  if command -v go >/dev/null; then GO="$(command -v go)";
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go;
  else die "no Go toolchain (looked for 'go' on PATH and /usr/local/go/bin/go); install Go >= 1.24"; fi
fi
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

WORK="$DEST.build"
rm -rf "$WORK"
mkdir -p "$WORK"
cp "$HERE/health-tools/main.go" "$WORK/"
(
  cd "$WORK"
  cat > go.mod <<MOD
module libvirt-operator.local/health-tools

go 1.24
MOD
  "$GO" get "sigs.k8s.io/cli-utils@$CLI_UTILS_VERSION" "github.com/google/cel-go@$CEL_GO_VERSION" >&2
  "$GO" mod tidy >&2
  "$GO" build -o health-check . >&2
) || die "go build failed in $WORK"
mkdir -p "$DEST"
mv "$WORK/health-check" "$DEST/health-check"
rm -rf "$WORK"
echo "$DEST/health-check"
