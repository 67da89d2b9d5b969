#!/usr/bin/env bash
# npm start: set up, then a local control plane (unless --kubeconfig names a cluster) and the agent.
set -euo pipefail
cd "$(dirname "$0")/.."
# Flags and their values first: a typo must not wait for the set-up (minutes on a fresh
# machine) to be named.
node scripts/up-flags.mjs "$@"
bash scripts/setup.sh >&2
exec node dist/cli.js up "$@"
