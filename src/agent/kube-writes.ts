// The few writes the agent makes to the API server, each one request, with explicit field
// managers and optimistic concurrency. Shared by the agent's cached context and the
// snapshot context tests use.
import {
  CustomObjectsApi,
  EventsV1Api,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
} from '@kubernetes/client-node';
import { customResources, type VirtKind } from '../api/generated/crds.js';
import type { KubeObject } from '../controllers/context.js';
import { microTime } from '../runtime/clock.js';

export const FIELD_MANAGER = 'libvirt-operator';
export const nodeFieldManager = (nodeName: string): string => `libvirt-operator/${nodeName}`;

export interface KubeWrites {
  applyStatus(
    kind: VirtKind,
    obj: KubeObject,
    status: object,
    fieldManager?: string,
  ): Promise<void>;
  /** Returns the object as patched. */
  patchFinalizers(kind: VirtKind, obj: KubeObject, finalizers: string[]): Promise<KubeObject>;
  createEvent(
    kind: VirtKind,
    obj: KubeObject,
    type: string,
    reason: string,
    message: string,
    note: { controller: string; instance: string; now: Date },
  ): Promise<void>;
}

export function kubeWrites(kubeConfig: KubeConfig): KubeWrites {
  const custom = kubeConfig.makeApiClient(CustomObjectsApi);
  const events = kubeConfig.makeApiClient(EventsV1Api);
  return {
    async applyStatus(kind, obj, status, fieldManager = FIELD_MANAGER) {
      const info = customResources[kind];
      const name = String(obj.metadata.name);
      const body = {
        apiVersion: info.apiVersion,
        kind,
        metadata: obj.metadata.namespace ? { name, namespace: obj.metadata.namespace } : { name },
        status,
      };
      const common = {
        group: info.group,
        version: info.version,
        plural: info.plural,
        name,
        body,
        fieldManager,
        force: true,
      };
      const options = setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply);
      if (obj.metadata.namespace) {
        await custom.patchNamespacedCustomObjectStatus(
          { ...common, namespace: obj.metadata.namespace },
          options,
        );
      } else {
        await custom.patchClusterCustomObjectStatus(common, options);
      }
    },
    async patchFinalizers(kind, obj, finalizers) {
      const info = customResources[kind];
      const name = String(obj.metadata.name);
      // The test op makes this a compare-and-swap: a stale view fails with a conflict and the
      // key is retried with a fresh object, so finalizers of other agents are never dropped.
      const body = [
        { op: 'test', path: '/metadata/resourceVersion', value: obj.metadata.resourceVersion },
        {
          op: obj.metadata.finalizers ? 'replace' : 'add',
          path: '/metadata/finalizers',
          value: finalizers,
        },
      ];
      const common = { group: info.group, version: info.version, plural: info.plural, name, body };
      const options = setHeaderOptions('Content-Type', PatchStrategy.JsonPatch);
      const patched: unknown = obj.metadata.namespace
        ? await custom.patchNamespacedCustomObject(
            { ...common, namespace: obj.metadata.namespace },
            options,
          )
        : await custom.patchClusterCustomObject(common, options);
      return patched as KubeObject;
    },
    async createEvent(kind, obj, type, reason, message, note) {
      const namespace = obj.metadata.namespace ?? 'default';
      await events.createNamespacedEvent({
        namespace,
        body: {
          metadata: { generateName: `${String(obj.metadata.name).slice(0, 200)}.`, namespace },
          // The API server wants MicroTime: six fractional digits.
          eventTime: microTime(note.now.getTime()) as unknown as Date,
          reportingController: `virt.dev/${note.controller}`,
          reportingInstance: note.instance,
          action: reason,
          reason,
          type,
          note: message.slice(0, 1024),
          regarding: {
            apiVersion: customResources[kind].apiVersion,
            kind,
            name: obj.metadata.name,
            namespace: obj.metadata.namespace,
            uid: obj.metadata.uid,
            resourceVersion: obj.metadata.resourceVersion,
          },
        },
      });
    },
  };
}
