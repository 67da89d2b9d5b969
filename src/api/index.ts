// The virt.dev/v1alpha1 API as code: types generated from crds/, the offline validator, defaults,
// quantities, conditions and the object-to-libvirt naming rules.
export * from './generated/types.js';
export {
  API_GROUP,
  API_VERSION,
  customResources,
  type CustomResourceInfo,
  type VirtKind,
} from './generated/crds.js';
export {
  applyDefaults,
  isVirtGroup,
  validateManifest,
  virtKindOf,
  type Problem,
  type ProblemType,
} from './validate.js';
export { compareQuantities, isQuantity, parseQuantity, QuantityError } from './quantity.js';
export {
  conditionTime,
  ConditionType,
  findCondition,
  isConditionTrue,
  removeCondition,
  sameConditions,
  setCondition,
  type ConditionStatus,
  type ConditionUpdate,
} from './conditions.js';
export { defaultMacAddress, domainName, libvirtUuid, volumeFileName } from './names.js';
