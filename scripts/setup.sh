#!/usr/bin/env bash
# Everything a fresh clone on a fresh machine needs before it can run or test the operator.
# Idempotent: a second run only checks and rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { echo "setup: $*"; }

node_major="$(node -p 'process.versions.node.split(".")[0]')"
node_minor="$(node -p 'process.versions.node.split(".")[1]')"
if (( node_major < 20 || (node_major == 20 && node_minor < 19) )); then
  echo "setup: Node.js >= 20.19 is required, found $(node --version)" >&2
  exit 1
fi

step "Debian packages"
bash scripts/install-host-deps.sh

# npm ci only when the lock file changed since the last install: a clean install costs ~30 s.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  step "npm ci"
  # Scripts are skipped here and the native addon is built explicitly below, so its build is
  # incremental and its failure is reported as such.
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
fi

if [[ -f binding.gyp ]]; then
  step "native libvirt addon"
  [[ -f build/Makefile ]] || npx --no-install node-gyp configure --loglevel=error
  npx --no-install node-gyp build --loglevel=error >/dev/null
fi

step "TypeScript build"
npx --no-install tsc -p tsconfig.build.json

step "control-plane binaries"
bash scripts/provision-control-plane.sh

# kstatus and Flux's CEL evaluation, for the GitOps health tests (a Go build, cached).
step "health-check tool"
bash scripts/build-health-tools.sh >/dev/null
step "local node binaries (kubelet, controller-manager, scheduler, containerd)"
bash scripts/provision-node.sh
