#!/usr/bin/env bash
# Builds kube-apiserver, kubectl, etcd and etcdctl from Go modules into a cache outside the
# repository, so fresh clones (CI clones fresh every run) reuse them. Idempotent: a complete
# cache directory is left alone. Honours KUBEBUILDER_ASSETS (the envtest convention): when it
# names a folder with kube-apiserver, etcd and kubectl, nothing is built.
set -euo pipefail

# Pinned, not read from the environment: the commands look for the binaries under this
# version (KUBERNETES_VERSION in src/commands/local/control-plane.ts; a unit test keeps the two
# equal), so another one built here would never be found.
K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
CACHE_ROOT="${LIBVIRT_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/libvirt-operator}"
DEST="$CACHE_ROOT/k8s/$K8S_VERSION"

die() { echo "provision-control-plane: $*" >&2; exit 1; }

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  for b in kube-apiserver etcd kubectl; do
    [[ -x "$KUBEBUILDER_ASSETS/$b" ]] || die "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no executable $b; unset it to build the binaries instead"
  done
  echo "provision-control-plane: using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
  exit 0
fi

if [[ -f "$DEST/.complete" ]]; then
  echo "provision-control-plane: cached in $DEST"
  exit 0
fi

GO="${GO:-}"
if [[ -n "$GO" && ! -x "$GO" ]]; then
  die "no Go toolchain at GO=$GO; install Go >= 1.26, or unset GO, or set KUBEBUILDER_ASSETS to a folder with kube-apiserver, etcd and kubectl"
fi
if [[ -z "$GO" ]]; then
  if command -v go >/dev/null; then GO="$(command -v go)";
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go;
  else die "no Go toolchain found (looked for 'go' on PATH and /usr/local/go/bin/go); install Go >= 1.26 or set KUBEBUILDER_ASSETS to a folder with kube-apiserver, etcd and kubectl"; fi
fi
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
# Two cores: building both at -p 2 peaks near 2 GB, which is fine on 24 GB.

WORK="$CACHE_ROOT/build"
mkdir -p "$WORK" "$DEST.tmp"
echo "provision-control-plane: building Kubernetes $K8S_VERSION and etcd $ETCD_VERSION into $DEST (about 10 minutes the first time)"

# --- kube-apiserver + kubectl -------------------------------------------------------------
# k8s.io/kubernetes replaces every staging module with a local path, so a wrapper module must
# pin each staging module to its published v0.Y.Z tag.
KW="$WORK/kubernetes-$K8S_VERSION"
mkdir -p "$KW"
MINOR="${K8S_VERSION#v1.}"; MINOR="${MINOR%%.*}"
PATCH="${K8S_VERSION##*.}"
STAGING_VERSION="v0.$MINOR.$PATCH"
(
  cd "$KW"
  if [[ ! -f go.mod ]]; then
    cat > go.mod <<MOD
module libvirt-operator.local/k8s-build

go 1.26
MOD
  fi
  "$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" > /dev/null
  MODFILE="$("$GO" env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.mod"
  [[ -f "$MODFILE" ]] || die "could not read go.mod of k8s.io/kubernetes@$K8S_VERSION"
  for m in $(grep -oE 'k8s.io/[a-z0-9-]+ => ./staging' "$MODFILE" | awk '{print $1}' | sort -u); do
    "$GO" mod edit -replace "$m=$m@$STAGING_VERSION"
  done
  "$GO" mod edit -require "k8s.io/kubernetes@$K8S_VERSION"
  cat > tools.go <<'SRC'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubectl/pkg/cmd"
)
SRC
  "$GO" mod tidy >/dev/null 2>&1 || true
  LDF="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$MINOR -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$MINOR"
  "$GO" build -trimpath -ldflags "$LDF" -o "$DEST.tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
  "$GO" build -trimpath -ldflags "$LDF" -o "$DEST.tmp/kubectl" k8s.io/kubernetes/cmd/kubectl
)

# --- etcd + etcdctl (own module so dependency versions do not mix) -------------------------
EW="$WORK/etcd-$ETCD_VERSION"
mkdir -p "$EW"
(
  cd "$EW"
  if [[ ! -f go.mod ]]; then
    cat > go.mod <<MOD
module libvirt-operator.local/etcd-build

go 1.26
MOD
  fi
  cat > tools.go <<'SRC'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "go.etcd.io/etcd/etcdctl/v3"
)
SRC
  "$GO" get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "go.etcd.io/etcd/etcdctl/v3@$ETCD_VERSION" >/dev/null
  "$GO" mod tidy >/dev/null 2>&1 || true
  "$GO" build -trimpath -ldflags "-s -w" -o "$DEST.tmp/etcd" go.etcd.io/etcd/server/v3
  "$GO" build -trimpath -ldflags "-s -w" -o "$DEST.tmp/etcdctl" go.etcd.io/etcd/etcdctl/v3
)

"$DEST.tmp/kube-apiserver" --version
# Never `| head` here: under pipefail etcd dies of SIGPIPE when head exits first, failing the
# whole set-up after minutes of building (test/unit/deploy/shell-pipes.test.ts keeps it so).
etcd_version="$("$DEST.tmp/etcd" --version)"
echo "${etcd_version%%$'\n'*}"
touch "$DEST.tmp/.complete"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "provision-control-plane: done: $DEST"
