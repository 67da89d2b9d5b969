import { defineConfig } from 'vitest/config';

// Three tiers. Unit tests are pure; integration tests talk to a real kube-apiserver + etcd and
// libvirt's in-process test driver; e2e tests drive a real libvirtd with QEMU through kubectl.
// Forks, not threads: the native libvirt addon runs one event-loop thread per process.
export default defineConfig({
  test: {
    pool: 'forks',
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          // Pure tests: one worker runs them all with the modules it has loaded, instead of a
          // fresh process and module graph per file (99 files: 139 s against 40 s on the
          // 2-core host, most of it start-up and imports). The few that stub env or timers
          // undo it in afterEach; a file run alone is isolated as before.
          isolate: false,
          // A few start a process (the CRD generator, kubectl kustomize, a transpiled facade):
          // 1-3 s alone, but the tier runs beside the e2e lane's guests in CI, and at load 18
          // one took 6 s against vitest's 5 s default (9 s for a 10 s hook).
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          testTimeout: 120_000,
          hookTimeout: 180_000,
        },
      },
      {
        // The long crash soak against a private libvirtd: `npm run test:soak` (50 rounds by
        // default, LVO_CHAOS_ROUNDS). Its 4-round short form is in the e2e project.
        test: {
          name: 'soak',
          include: ['test/soak/**/*.test.ts'],
          testTimeout: 3_600_000,
          hookTimeout: 300_000,
          fileParallelism: false,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          testTimeout: 300_000,
          hookTimeout: 300_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
