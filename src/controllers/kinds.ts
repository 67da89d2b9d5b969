// Every kind the agent runs, in one list: adding a kind is its folder plus one line here.
import type { ControllerModule } from './module.js';
import { storagePool } from './storage-pool/index.js';
import { virtualMachineRestore } from './virtual-machine-restore/index.js';
import { virtualMachineSnapshot } from './virtual-machine-snapshot/index.js';
import { virtualMachine } from './virtual-machine/index.js';
import { virtualNetwork } from './virtual-network/index.js';
import { volume } from './volume/index.js';

export const CONTROLLER_MODULES: readonly ControllerModule[] = [
  virtualMachine,
  volume,
  virtualNetwork,
  storagePool,
  virtualMachineSnapshot,
  virtualMachineRestore,
];
