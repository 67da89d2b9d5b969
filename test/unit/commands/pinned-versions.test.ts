// The provisioning scripts build the control plane and the local node under a version folder;
// the commands look for the binaries under the version they were written for. A version bumped
// on one side only would build binaries nobody runs, and the commands would fail to find any.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { KUBERNETES_VERSION } from '../../../src/commands/local/control-plane.js';
import { CONTAINERD_VERSION } from '../../../src/commands/local/local-node.js';

const pinned = (script: string, name: string): string | undefined =>
  new RegExp(`^${name}=(\\S+)$`, 'm').exec(readFileSync(`scripts/${script}`, 'utf8'))?.[1];

describe('versions the provisioning scripts build', () => {
  it('are the ones the commands look for', () => {
    expect(pinned('provision-control-plane.sh', 'K8S_VERSION')).toBe(KUBERNETES_VERSION);
    expect(pinned('provision-node.sh', 'K8S_VERSION')).toBe(KUBERNETES_VERSION);
    expect(pinned('provision-node.sh', 'CONTAINERD_VERSION')).toBe(CONTAINERD_VERSION);
  });
});
