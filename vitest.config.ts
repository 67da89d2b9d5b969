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
