// The tests' Ceph cluster is the product's (src/rig/ceph-cluster.ts: `reproduce --rig rbd` brings
// one up too); this name stays for the tests.
export * from '../../src/rig/ceph-cluster.ts';
