#!/usr/bin/env bash
# Builds what `libvirt-operator local-cluster --node` runs besides etcd and kube-apiserver:
# kubelet, kube-controller-manager and kube-scheduler (the same Kubernetes version as the API
# server), containerd 2 with its runc shim, ctr and runc (a 1.36 kubelet needs containerd 2.x, and
# Debian has 1.6), and the pod sandbox ("pause") binary compiled from the Kubernetes module's
# own source. Cached outside the repository like the control plane; idempotent: a complete
# cache directory is left alone. The CNI plugins come from Debian (scripts/install-host-deps.sh).
set -euo pipefail

# Pinned, not read from the environment: the commands look for the binaries under these
# versions (KUBERNETES_VERSION in src/commands/local/control-plane.ts, CONTAINERD_VERSION in
# local-node.ts; a unit test keeps them equal), so others built here would never be found.
K8S_VERSION=v1.36.3
CONTAINERD_VERSION=v2.4.2
RUNC_VERSION=v1.5.3
CACHE_ROOT="${LIBVIRT_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/libvirt-operator}"
DEST="$CACHE_ROOT/node/$K8S_VERSION-containerd-$CONTAINERD_VERSION"

die() { echo "provision-node: $*" >&2; exit 1; }

if [[ -f "$DEST/.complete" ]]; then
  echo "provision-node: cached in $DEST"
  exit 0
fi

GO="${GO:-}"
if [[ -n "$GO" && ! -x "$GO" ]]; then die "no Go toolchain at GO=$GO; install Go >= 1.26 or unset GO"; fi
if [[ -z "$GO" ]]; then
  if command -v go >/dev/null; then GO="$(command -v go)";
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go;
  else die "no Go toolchain found (looked for 'go' on PATH and /usr/local/go/bin/go); install Go >= 1.26"; fi
fi
command -v gcc >/dev/null || die "gcc is needed to compile the pod sandbox (pause) binary"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

WORK="$CACHE_ROOT/build"
mkdir -p "$WORK" "$DEST.tmp"
echo "provision-node: building kubelet, kube-controller-manager, kube-scheduler $K8S_VERSION and containerd $CONTAINERD_VERSION into $DEST (several minutes the first time; much of it is shared with the API server's build cache)"

# --- kubelet, kube-controller-manager, kube-scheduler ---------------------------------------
# The same wrapper-module recipe as provision-control-plane.sh, with the same dependency
# versions (they all come from k8s.io/kubernetes' go.mod), so Go's build cache reuses every
# package the API server build already compiled.
KW="$WORK/kubernetes-$K8S_VERSION-node"
mkdir -p "$KW"
MINOR="${K8S_VERSION#v1.}"; MINOR="${MINOR%%.*}"
PATCH="${K8S_VERSION##*.}"
STAGING_VERSION="v0.$MINOR.$PATCH"
(
  cd "$KW"
  if [[ ! -f go.mod ]]; then
    cat > go.mod <<MOD
module libvirt-operator.local/k8s-node-build

go 1.26
MOD
  fi
  "$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" > /dev/null
  MODCACHE="$("$GO" env GOMODCACHE)"
  MODFILE="$MODCACHE/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.mod"
  [[ -f "$MODFILE" ]] || die "could not read go.mod of k8s.io/kubernetes@$K8S_VERSION"
  for m in $(grep -oE 'k8s.io/[a-z0-9-]+ => ./staging' "$MODFILE" | awk '{print $1}' | sort -u); do
    "$GO" mod edit -replace "$m=$m@$STAGING_VERSION"
  done
  "$GO" mod edit -require "k8s.io/kubernetes@$K8S_VERSION"
  cat > tools.go <<'SRC'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
SRC
  "$GO" mod tidy >/dev/null 2>&1 || true
  LDF="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$MINOR -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$MINOR"
  for cmd in kubelet kube-controller-manager kube-scheduler; do
    "$GO" build -trimpath -ldflags "$LDF" -o "$DEST.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd"
  done
  # The sandbox every pod shares its namespaces with. No registry here, so it is compiled from
  # the C source the Kubernetes module ships and packed into an image at cluster start.
  PAUSE_SRC="$MODCACHE/k8s.io/kubernetes@$K8S_VERSION/build/pause/linux/pause.c"
  [[ -f "$PAUSE_SRC" ]] || die "no $PAUSE_SRC in the Go module cache"
  gcc -Os -static -Wall -DVERSION="$K8S_VERSION-libvirt-operator" -o "$DEST.tmp/pause" "$PAUSE_SRC"
)

# --- containerd 2 + runc shim + ctr (own module: its dependency versions are its own) -------
CW="$WORK/containerd-$CONTAINERD_VERSION"
mkdir -p "$CW"
(
  cd "$CW"
  if [[ ! -f go.mod ]]; then
    cat > go.mod <<MOD
module libvirt-operator.local/containerd-build

go 1.26
MOD
  fi
  cat > tools.go <<'SRC'
//go:build tools

package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
SRC
  "$GO" get "github.com/containerd/containerd/v2@$CONTAINERD_VERSION" >/dev/null
  "$GO" mod tidy >/dev/null 2>&1 || true
  # No cgo: the btrfs snapshotter (the one plugin that needs it) is left out; overlayfs and
  # native snapshotters remain.
  LDF="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
  for cmd in containerd containerd-shim-runc-v2 ctr; do
    "$GO" build -trimpath -tags "no_btrfs no_devmapper no_zfs" -ldflags "$LDF" -o "$DEST.tmp/$cmd" "github.com/containerd/containerd/v2/cmd/$cmd"
  done
)

# --- runc (cgo: its nsenter is C; seccomp through Debian's libseccomp) ---------------------
# Debian's runc 1.1.5 runs plain containers but fails to start containerd 2's pod sandboxes.
RW="$WORK/runc-$RUNC_VERSION"
mkdir -p "$RW"
(
  cd "$RW"
  if [[ ! -f go.mod ]]; then
    cat > go.mod <<MOD
module libvirt-operator.local/runc-build

go 1.26
MOD
  fi
  printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/opencontainers/runc"\n' > tools.go
  "$GO" get "github.com/opencontainers/runc@$RUNC_VERSION" >/dev/null
  "$GO" mod tidy >/dev/null 2>&1 || true
  CGO_ENABLED=1 "$GO" build -trimpath -tags seccomp -ldflags "-s -w -X main.version=${RUNC_VERSION#v}" -o "$DEST.tmp/runc" github.com/opencontainers/runc
)

"$DEST.tmp/kubelet" --version
"$DEST.tmp/containerd" --version
touch "$DEST.tmp/.complete"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "provision-node: done: $DEST"
