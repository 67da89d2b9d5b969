// libvirt-operator's main entry: the virt.dev/v1alpha1 API as code (generated types, the
// offline validator, defaults, quantities, conditions, naming rules). Pure: importing it loads
// no native code. The libvirt binding is 'libvirt-operator/libvirt'.
export * from './api/index.js';
