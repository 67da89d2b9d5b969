import { describe, expect, it } from 'vitest';
import { importedDigests, loadedImageLine } from '../../../src/commands/local/local-node.js';

const DIGEST = 'sha256:fdcf5cdb9a798706f67002ffdb475dfab48b05fd338cc4b35b5465608e87d22a';
// `ctr images import build/image/libvirt-operator-dev.tar` of containerd v2.4.2 on this host:
// its stdout (the name mangled by its display), then its stderr.
const importStdout = [
  'docker.io/library/libvirt operator:dev  \tsaved\t',
  `application/vnd.oci.image.manifest.v1+json ${DIGEST}`,
  'Importing\telapsed: 3.9 s\ttotal:   0.0 B\t(0.0 B/s)\t',
  '',
].join('\n');
const importStderr =
  'time="2026-12-07T21:49:50Z" level=warning msg="DEPRECATION: The support for cgroup v1 is deprecated since containerd v2.2 and will be removed by no later than May 2029. Upgrade the host to use cgroup v2."\n';
// `ctr images ls -q target.digest==…` afterwards: the CRI names the image by its config too.
const lsQuiet = [
  'docker.io/library/libvirt-operator:dev',
  'sha256:faf5803cf45fb4bdd9a9a670f28a0154674581232da940321c68d880c8512515',
  '',
].join('\n');

describe("a local node's image import, as the user reads it", () => {
  it('finds the manifest digest ctr printed, and nothing in its stderr', () => {
    expect(importedDigests(importStdout)).toEqual([DIGEST]);
    expect(importedDigests(importStderr)).toEqual([]);
  });

  it("is one line with containerd's name of the image, not ctr's display or warning", () => {
    const line = loadedImageLine('build/image/libvirt-operator-dev.tar', [DIGEST], lsQuiet);
    expect(line).toBe(
      'local node: loaded docker.io/library/libvirt-operator:dev (sha256:fdcf5cdb9a79…) from build/image/libvirt-operator-dev.tar',
    );
    expect(line).not.toContain('\n');
    expect(line).not.toMatch(/libvirt operator|cgroup|Importing|saved/);
  });

  it('names at least the file when ctr printed no digest it can read', () => {
    expect(loadedImageLine('/tmp/x.tar', [], '')).toBe('local node: loaded /tmp/x.tar');
  });
});
