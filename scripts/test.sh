#!/usr/bin/env bash
# npm test: set up, check generated code, types, lint and format, then run every tier.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "test: generated API types are current"
if node -e 'process.exit(require("./package.json").scripts["gen:check"] ? 0 : 1)'; then npm run --silent gen:check; fi
# Types, lint and format are independent and each mostly uses one core, so they run side by
# side: one after another they took 12 s, 10 s and 14 s on a warm 2-core machine (the lead's
# figures, 2026-12-07); at load 13-17 beside other work, 331 s serial against 241 s side by
# side. Prettier's time is its own: it reads only the ~720 tracked sources (.gitignore and
# .prettierignore leave out .tmp, dist, build and node_modules), the large test files most.
# Each one's output is printed whole, in this order, once all are done; any failure fails.
mkdir -p .tmp
checks=(typecheck lint format)
declare -A check_cmd=(
  [typecheck]="npx --no-install tsc -p tsconfig.json"
  [lint]="npx --no-install eslint . --max-warnings=0"
  [format]="npx --no-install prettier --check . --log-level=warn"
)
declare -A check_pid=()
echo "test: typecheck, lint and format"
for c in "${checks[@]}"; do
  ${check_cmd[$c]} >".tmp/check-$c.log" 2>&1 &
  check_pid[$c]=$!
done
checks_failed=0
for c in "${checks[@]}"; do
  if wait "${check_pid[$c]}"; then
    echo "test: $c passed"
  else
    echo "test: $c FAILED: ${check_cmd[$c]}"
    checks_failed=1
  fi
  cat ".tmp/check-$c.log"
done
[ "$checks_failed" -eq 0 ] || exit 1

rm -f .tmp/vitest-report*.json
# kubectl run by the tests themselves against their throwaway control planes keeps its
# discovery cache here, not in the user's ~/.kube/cache (a run left hundreds of dead 127.0.0.1
# servers there; the control plane's own kubectl keeps its cache in the control plane's folder).
export KUBECACHEDIR="$PWD/.tmp/kube-cache"
rm -rf "$KUBECACHEDIR"
# Two lanes side by side. One vitest run would take the tiers one after another: it runs the
# e2e project (fileParallelism: false) as its own group after unit and integration, and on
# 2 cores it gives those one worker. The e2e tier mostly waits (guests booting, agents
# converging, timers), so it runs beside the others, and the suite takes about as long as its
# longer lane instead of the sum of the tiers. Each lane runs one test file at a time, as
# before. To even out the lanes, the first one then takes two e2e files that run on a private
# libvirtd of their own (libvirt daemon and faults; the chaos files went back to the e2e lane
# once destroys stopped waiting ~2 s for the sandbox's init to reap QEMU). The files that
# touch host-wide state stay together in the e2e lane, one at a time: the corpus compares /etc,
# /srv, /var/lib/libvirt-operator and more before and after, which the DaemonSet's pod and
# `up --examples` write to. e2e lane lines start with "e2e| ". Arguments (e.g. a file filter)
# go to both lanes, and then the e2e lane runs every e2e file they select.
# The e2e lane ends sooner, so it then takes slow integration files as its tail: the local
# cluster CLI (~75 s), the quiet-convergence watch (~70 s) and the package install (~110 s; it
# packs a copy of the sources, so its prepack leaves the checkout's dist/ alone). Measured on a
# fresh clone 2026-12-07 12:09 with the CLI's start flags (~40 s) in the tail too: main lane
# 1,114 s + 21 s, e2e lane 917 s + tail 277 s. Since then each file's control plane is
# stopped without the API server's graceful shutdown (~1.3 s; 45 files in the main lane, 11
# in the e2e lane), the tests start the CLI from dist/ (about half the CPU of a start through
# tsx) and their polls read an object with a GET, not a kubectl start each (both lanes), and
# the start flags went back to the main lane: on a fresh clone 2026-12-07 17:03, main lane
# 1,019 s + 20 s, e2e lane 830 s + tail 210 s.
reporters=(--reporter=default --reporter=json --passWithNoTests)
side=(test/e2e/libvirt/daemon.test.ts test/e2e/libvirt/faults.test.ts)
exclude=(--exclude=test/e2e/libvirt/daemon.test.ts --exclude=test/e2e/libvirt/faults.test.ts)
tail=(test/integration/cli/local-cluster.test.ts test/integration/runtime/quiet.test.ts
  test/integration/deploy/package.test.ts)
tail_exclude=()
for f in "${tail[@]}"; do tail_exclude+=("--exclude=$f"); done
if [ "$#" -gt 0 ]; then side=() exclude=() tail=() tail_exclude=(); fi
status=0
(
  {
    lane=0
    npx --no-install vitest run --project e2e "${reporters[@]}" "${exclude[@]}" \
      --outputFile.json=.tmp/vitest-report-e2e.json "$@" || lane=$?
    if [ "${#tail[@]}" -gt 0 ]; then
      npx --no-install vitest run --project integration "${reporters[@]}" \
        --outputFile.json=.tmp/vitest-report-integration-tail.json "${tail[@]}" || lane=$?
    fi
    exit "$lane"
  } 2>&1 | sed -u 's/^/e2e| /'
) &
e2e=$!
npx --no-install vitest run --project unit --project integration "${reporters[@]}" \
  "${tail_exclude[@]}" --outputFile.json=.tmp/vitest-report-unit-integration.json "$@" \
  || status=$?
if [ "${#side[@]}" -gt 0 ]; then
  npx --no-install vitest run --project e2e "${reporters[@]}" \
    --outputFile.json=.tmp/vitest-report-e2e-side.json "${side[@]}" || status=$?
fi
wait "$e2e" || status=$?
# A plain closing line that any CI reader understands, taken from vitest's own reports.
node -e '
  const fs = require("node:fs");
  const files = fs.readdirSync(".tmp").filter((f) => /^vitest-report.*\.json$/.test(f));
  const n = { passed: 0, failed: 0, skipped: 0 };
  for (const f of files) {
    const r = JSON.parse(fs.readFileSync(`.tmp/${f}`, "utf8"));
    n.passed += r.numPassedTests;
    n.failed += r.numFailedTests;
    n.skipped += r.numPendingTests + r.numTodoTests;
  }
  console.log(`vitest: ${n.passed} passed, ${n.failed} failed, ${n.skipped} skipped (${files.length} reports)`);
  // The lanes print side by side and a CI log may keep only its tail, so the failures are
  // named again here, last, with the first lines of what each one said.
  for (const f of files) {
    const r = JSON.parse(fs.readFileSync(`.tmp/${f}`, "utf8"));
    for (const file of r.testResults) {
      const failed = file.assertionResults.filter((t) => t.status === "failed");
      if (failed.length === 0 && file.status === "failed") {
        console.log(`FAILED ${file.name}: ${String(file.message).split("\n").slice(0, 6).join("\n    ")}`);
      }
      for (const t of failed) {
        const said = (t.failureMessages[0] ?? "").split("\n").slice(0, 6).join("\n    ");
        console.log(`FAILED ${file.name} > ${t.fullName}\n    ${said}`);
      }
    }
  }
' || true
exit "$status"
