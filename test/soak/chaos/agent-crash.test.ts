// The long crash soak: `npm run test:soak` (LVO_CHAOS_ROUNDS, default 50; LVO_CHAOS_SEED
// replays a run; LVO_CHAOS_LOG appends every agent's output to a file). See crash-rounds.ts.
import { crashRounds } from './crash-rounds.js';

crashRounds({
  rounds: Number(process.env.LVO_CHAOS_ROUNDS ?? 50),
  killsPerRound: 2,
  initialVolumes: 30,
  initialVms: 40,
  convergeMs: 120_000,
  seed: Number(process.env.LVO_CHAOS_SEED ?? Date.now() % 2 ** 31),
  logFile: process.env.LVO_CHAOS_LOG,
});
