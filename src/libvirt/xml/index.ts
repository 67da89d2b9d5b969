// Typed libvirt XML documents for the four kinds the operator manages, and their codec.
export * from './codec.js';
export * from './units.js';
export * from './domain.js';
export * from './network.js';
export * from './pool.js';
export * from './volume.js';
export * from './snapshot.js';
export * from './capabilities.js';
