// The short crash suite in npm test: 4 rounds, 9 agent kills (kill -9 at random moments while
// objects are created, changed and deleted), one libvirtd restart, one API server kill -9 and
// restart, one etcd compaction (with an API server restart); after each round the host must
// hold exactly the declared domains and volume files, with volume data intact, and exactly
// the declared snapshots of the machine that is snapshotted and restored meanwhile. The long form
// is test/soak/chaos (npm run test:soak).
import { crashRounds } from '../../soak/chaos/crash-rounds.js';

crashRounds({
  rounds: 4,
  killsPerRound: 2,
  initialVolumes: 12,
  initialVms: 16,
  convergeMs: 120_000,
  seed: Number(process.env.LVO_CHAOS_SEED ?? Date.now() % 2 ** 31),
  logFile: process.env.LVO_CHAOS_LOG,
});
