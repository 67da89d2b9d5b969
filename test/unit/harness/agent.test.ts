import { describe, expect, it } from 'vitest';
import { objectPath } from '../../harness/agent.js';

describe('objectPath: the GET that stands for `kubectl get KIND NAME [-n NS]`', () => {
  it.each([
    [['vm', 'web'], '/apis/virt.dev/v1alpha1/namespaces/default/virtualmachines/web'],
    [['vm', 'a', '-n', 'ns1'], '/apis/virt.dev/v1alpha1/namespaces/ns1/virtualmachines/a'],
    [['volume', 'k', '-n', 'x'], '/apis/virt.dev/v1alpha1/namespaces/x/volumes/k'],
    [['vmsnap', 's'], '/apis/virt.dev/v1alpha1/namespaces/default/virtualmachinesnapshots/s'],
    [['vnet', 'lab'], '/apis/virt.dev/v1alpha1/virtualnetworks/lab'],
    [['storagepool', 'p'], '/apis/virt.dev/v1alpha1/storagepools/p'],
  ])('%j is %s', (args, path) => {
    expect(objectPath(args)).toBe(path);
  });

  it.each([
    [['vm,vol', '-n', 'ns1']],
    [['vm', '-n', 'ns1']],
    [['vm', 'a', '--show-managed-fields']],
    [['vm', 'a', '-n', 'ns1', '--show-managed-fields']],
    [['events', '-n', 'default', '--field-selector', 'reason=x']],
    [['nodes', 'n1']],
    [['pool', 'p', '-n', 'ns1']],
  ])('%j is left to kubectl', (args) => {
    expect(objectPath(args)).toBeUndefined();
  });
});
