#!/usr/bin/env bash
# npm start: set up, then a local control plane (unless --kubeconfig names a cluster) and the agent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
exec node dist/cli.js up "$@"
