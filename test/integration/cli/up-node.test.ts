// up's Node object for this host: created when the cluster answers 404 for it, and only then.
// A kubeconfig whose user may create Nodes but not read them (RBAC is real here) gets the
// refused read reported, not a Node created behind it.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ensureNode } from '../../../src/commands/up.js';
import { createKubeClient, isNotFound } from '../../../src/runtime/kube-client.js';
import { loadKubeAccessFromFile } from '../../../src/runtime/kube-config.js';
import { useControlPlane } from '../../harness/control-plane.js';
import { kubectlOk } from '../../harness/kubectl.js';

const id = randomBytes(3).toString('hex');
const CREATOR = `node-creator-${id}`;
const CREATOR_TOKEN = randomBytes(24).toString('hex');
const cp = useControlPlane({
  installCRDs: false,
  extraTokens: [{ token: CREATOR_TOKEN, user: CREATOR, uid: `${CREATOR}-uid`, groups: [] }],
});
const dir = mkdtempSync(join(tmpdir(), 'lvo-up-node-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const kubectl = (args: string[], input?: string): Promise<string> =>
  kubectlOk(cp(), args, input === undefined ? {} : { input });

/** A client as `token`'s user, from a copy of the control plane's kubeconfig. */
async function clientAs(token: string) {
  const path = join(dir, `kubeconfig-${token.slice(0, 6)}`);
  writeFileSync(path, readFileSync(cp().kubeconfigPath, 'utf8').replace(cp().token, token));
  return createKubeClient(await loadKubeAccessFromFile(path));
}

const nodeExists = async (name: string) =>
  (await cp().getRaw(`/api/v1/nodes/${name}`)).status === 200;

describe("up's Node for this host", () => {
  it('is created when missing and left alone when there', async () => {
    const admin = createKubeClient(await loadKubeAccessFromFile(cp().kubeconfigPath));
    const name = `up-node-${id}-a`;
    await ensureNode(admin, name);
    expect(await nodeExists(name)).toBe(true);
    await ensureNode(admin, name);
    await kubectl(['delete', 'node', name]);
  });

  it('is not created behind a read the user may not make: the refused read is reported', async () => {
    await kubectl([
      'create',
      'clusterrole',
      `create-nodes-${id}`,
      '--verb=create',
      '--resource=nodes',
    ]);
    await kubectl([
      'create',
      'clusterrolebinding',
      `create-nodes-${id}`,
      `--clusterrole=create-nodes-${id}`,
      `--user=${CREATOR}`,
    ]);
    const creator = await clientAs(CREATOR_TOKEN);
    const name = `up-node-${id}-b`;
    const err = await ensureNode(creator, name).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).toMatch(
      new RegExp(
        `^cannot read this host's Node ${name} \\(to create it when missing\\): GET /api/v1/nodes/${name}: 403 Forbidden: `,
      ),
    );
    expect(isNotFound(err)).toBe(false);
    expect(await nodeExists(name)).toBe(false);
  });
});
