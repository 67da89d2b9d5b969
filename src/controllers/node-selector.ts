// Which nodes a cluster-scoped object (StoragePool, VirtualNetwork) is materialised on: the
// label-selector semantics of metav1.LabelSelector (matchLabels AND every matchExpression),
// evaluated by each agent against its own Node's labels.
import type { LabelSelector, LabelSelectorRequirement } from '../api/generated/types.js';

export type NodeLabels = Readonly<Record<string, string>>;

/**
 * Whether a node with `labels` is selected. An absent or empty selector selects every node, as
 * the API documents (and unlike a Kubernetes Service, where an empty selector selects nothing).
 */
export function selectsNode(selector: LabelSelector | undefined, labels: NodeLabels): boolean {
  if (!selector) return true;
  const byLabels = Object.entries(selector.matchLabels ?? {}).every(
    ([key, value]) => Object.hasOwn(labels, key) && labels[key] === value,
  );
  return byLabels && (selector.matchExpressions ?? []).every((r) => meetsRequirement(r, labels));
}

function meetsRequirement(req: LabelSelectorRequirement, labels: NodeLabels): boolean {
  const has = Object.hasOwn(labels, req.key);
  const values = req.values ?? [];
  switch (req.operator) {
    case 'In':
      return has && values.includes(labels[req.key] as string);
    // As in apimachinery: a node without the key satisfies NotIn.
    case 'NotIn':
      return !has || !values.includes(labels[req.key] as string);
    case 'Exists':
      return has;
    case 'DoesNotExist':
      return !has;
    default: {
      // The CRD's enum rejects other operators; an object that slipped past it (an older CRD)
      // selects no node rather than every node.
      return false;
    }
  }
}

/**
 * The selector as a Kubernetes label-selector query (`a=b,c in (d,e),!f`), for asking the API
 * server which Nodes it selects; undefined when it selects no node whatever the labels (an
 * operator the query language has no word for). Label keys and values cannot hold the
 * query's separators: the CRDs' schemas hold them to Kubernetes' label syntax.
 */
export function selectorQuery(selector: LabelSelector | undefined): string | undefined {
  if (!selector) return '';
  const parts = Object.entries(selector.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`);
  for (const r of selector.matchExpressions ?? []) {
    const values = `(${(r.values ?? []).join(',')})`;
    switch (r.operator) {
      case 'In':
        // `k in ()` is refused by the API server; an empty In selects nothing anyway.
        if (!r.values?.length) return undefined;
        parts.push(`${r.key} in ${values}`);
        break;
      case 'NotIn':
        if (r.values?.length) parts.push(`${r.key} notin ${values}`);
        break;
      case 'Exists':
        parts.push(r.key);
        break;
      case 'DoesNotExist':
        parts.push(`!${r.key}`);
        break;
      default:
        return undefined;
    }
  }
  return parts.join(',');
}
