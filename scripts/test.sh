#!/usr/bin/env bash
# npm test: set up, check generated code, types, lint and format, then run every tier.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "test: generated API types are current"
if node -e 'process.exit(require("./package.json").scripts["gen:check"] ? 0 : 1)'; then npm run --silent gen:check; fi
echo "test: typecheck"
npx --no-install tsc -p tsconfig.json
echo "test: lint and format"
npx --no-install eslint . --max-warnings=0
npx --no-install prettier --check . --log-level=warn

mkdir -p .tmp
status=0
npx --no-install vitest run --project unit --project integration --project e2e --reporter=default --reporter=json --outputFile.json=.tmp/vitest-report.json "$@" || status=$?
# A plain closing line that any CI reader understands, taken from vitest's own report.
node -e '
  const r = require("./.tmp/vitest-report.json");
  console.log(`vitest: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped`);
' || true
exit "$status"
