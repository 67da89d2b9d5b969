import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  lostMountPoint,
  mountHolding,
  mountLost,
  parseMountInfo,
  viewMissesLaterMounts,
  watchedMountPoint,
} from '../../../../src/controllers/shared/pool-mounts.js';

// Lines as the kernel writes them: a host with a data disk on /srv (a directory with a space
// in it mounted from an NFS share below it), and an agent pod whose hostPaths are bind mounts
// of subdirectories (root not "/") with an emptyDir on /tmp.
const HOST = [
  '27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw',
  '22 27 0:21 / /proc rw,relatime shared:12 - proc proc rw',
  '60 27 8:17 / /srv rw,relatime shared:30 - xfs /dev/sdb1 rw,attr2',
  '61 60 0:50 / /srv/libvirt\\040pools/nfs rw,relatime shared:31 master:7 - nfs4 ' +
    'fs:/export rw,vers=4.2',
  '',
].join('\n');
const POD = [
  '900 800 0:90 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/l,upperdir=/u',
  '910 900 8:17 /libvirt\\040pools /srv/libvirt\\040pools rw,relatime master:30 - xfs ' +
    '/dev/sdb1 rw,attr2',
  '911 910 0:50 / /srv/libvirt\\040pools/nfs rw,relatime master:31 - nfs4 fs:/export rw',
  '912 900 254:0 /var/lib/libvirt /var/lib/libvirt rw,relatime - ext4 /dev/vda rw',
  '913 900 254:0 /var/lib/kubelet/pods/abc/volumes/kubernetes.io~empty-dir/tmp /tmp rw - ext4 ' +
    '/dev/vda rw',
].join('\n');

describe('parseMountInfo', () => {
  it('reads root, mount point and type past any number of optional fields', () => {
    expect(parseMountInfo(HOST)).toEqual([
      { root: '/', mountPoint: '/', fsType: 'ext4', propagates: true },
      { root: '/', mountPoint: '/proc', fsType: 'proc', propagates: true },
      { root: '/', mountPoint: '/srv', fsType: 'xfs', propagates: true },
      { root: '/', mountPoint: '/srv/libvirt pools/nfs', fsType: 'nfs4', propagates: true },
    ]);
    // No optional field at all: a private mount.
    expect(parseMountInfo(POD)[3]).toEqual({
      root: '/var/lib/libvirt',
      mountPoint: '/var/lib/libvirt',
      fsType: 'ext4',
      propagates: false,
    });
  });

  it('unescapes space, tab, newline and backslash, and skips lines it cannot read', () => {
    const line = '70 27 0:60 /a\\134b /mnt/x\\011y\\012z rw - tmpfs tmpfs rw';
    expect(parseMountInfo(line)).toEqual([
      { root: '/a\\b', mountPoint: '/mnt/x\ty\nz', fsType: 'tmpfs', propagates: false },
    ]);
    expect(parseMountInfo('garbage\n1 2 3\n')).toEqual([]);
  });
});

describe('viewMissesLaterMounts', () => {
  it("is true under a pod's private hostPath bind: a disk mounted later stays unseen there", () => {
    expect(viewMissesLaterMounts(parseMountInfo(POD), '/var/lib/libvirt/images/pool')).toBe(true);
  });

  it('is false under a bind that receives the host mounts, or a whole file system', () => {
    const pods = parseMountInfo(POD);
    // mountPropagation HostToContainer: "master:30".
    expect(viewMissesLaterMounts(pods, '/srv/libvirt pools/fast')).toBe(false);
    expect(viewMissesLaterMounts(pods, '/srv/libvirt pools/nfs/a')).toBe(false);
    // The host's own view, and a private mount of a whole file system: this namespace's own.
    expect(viewMissesLaterMounts(parseMountInfo(HOST), '/srv/pools')).toBe(false);
    const privateRoot = parseMountInfo('1 0 254:0 / / rw - ext4 /dev/vda rw');
    expect(viewMissesLaterMounts(privateRoot, '/data/pool')).toBe(false);
  });
});

describe('mountHolding', () => {
  it('takes the longest mount point at or above the path, on a component boundary', () => {
    const host = parseMountInfo(HOST);
    expect(mountHolding(host, '/srv/libvirt pools/nfs/p')?.fsType).toBe('nfs4');
    expect(mountHolding(host, '/srv/libvirt pools/nfsx')?.fsType).toBe('xfs');
    expect(mountHolding(host, '/srvx')?.mountPoint).toBe('/');
    expect(mountHolding(host, '/srv')?.mountPoint).toBe('/srv');
  });

  it('takes the one on top of several on one point', () => {
    const stacked = parseMountInfo(`${HOST}70 60 0:61 / /srv rw - tmpfs tmpfs rw\n`);
    expect(mountHolding(stacked, '/srv/p')?.fsType).toBe('tmpfs');
  });
});

describe('watchedMountPoint', () => {
  it('is the mount point of a whole file system other than /', () => {
    const host = parseMountInfo(HOST);
    expect(watchedMountPoint(host, '/srv/libvirt pools/a')).toBe('/srv');
    expect(watchedMountPoint(host, '/srv/libvirt pools/nfs/b')).toBe('/srv/libvirt pools/nfs');
    expect(watchedMountPoint(host, '/var/lib/libvirt/images')).toBeUndefined();
  });

  it('is nothing under a bind mount of a subdirectory (a hostPath, an emptyDir)', () => {
    const pod = parseMountInfo(POD);
    expect(watchedMountPoint(pod, '/srv/libvirt pools/a')).toBeUndefined();
    expect(watchedMountPoint(pod, '/var/lib/libvirt/images')).toBeUndefined();
    expect(watchedMountPoint(pod, '/tmp/p')).toBeUndefined();
    // A whole file system mounted below a hostPath is carried into the pod as it is.
    expect(watchedMountPoint(pod, '/srv/libvirt pools/nfs/b')).toBe('/srv/libvirt pools/nfs');
  });
});

describe('mountLost', () => {
  const host = parseMountInfo(HOST);
  const unmounted = host.filter(
    (m) => m.mountPoint !== '/srv' && !m.mountPoint.startsWith('/srv/'),
  );

  it('is false while the recorded point is mounted, true once the path is on what is under it', () => {
    expect(mountLost(host, '/srv', '/srv/libvirt pools/a')).toBe(false);
    expect(mountLost(unmounted, '/srv', '/srv/libvirt pools/a')).toBe(true);
    expect(mountLost(unmounted, '/srv/libvirt pools/nfs', '/srv/libvirt pools/nfs/b')).toBe(true);
  });

  it('is true in a pod whose hostPath on the recorded point binds the directory underneath', () => {
    // /var/lib/libvirt was a data disk; after a reboot that did not mount it, the pod's
    // hostPath there is a bind of the plain directory on the host's root file system.
    const pod = parseMountInfo(POD);
    expect(mountLost(pod, '/var/lib/libvirt', '/var/lib/libvirt/images')).toBe(true);
    const withDisk = parseMountInfo(
      `${POD}\n914 900 8:33 / /var/lib/libvirt rw,relatime - ext4 /dev/sdc1 rw`,
    );
    expect(mountLost(withDisk, '/var/lib/libvirt', '/var/lib/libvirt/images')).toBe(false);
  });

  it('is false in a pod that sees the pool through a bind mount below the recorded point', () => {
    // Noted by the agent run as a host process; /srv itself is no mount point in the pod.
    expect(mountLost(parseMountInfo(POD), '/srv', '/srv/libvirt pools/a')).toBe(false);
  });
});

describe('lostMountPoint', () => {
  // The record as the agent run as a host process left it in the shared state directory, read
  // here against this process's real mountinfo, where neither point is a mount point.
  const stateDir = mkdtempSync(join(tmpdir(), 'lvo-pool-mounts-'));
  afterAll(() => rmSync(stateDir, { recursive: true, force: true }));
  const recorded = (uid: string, mountPoint: string) => {
    mkdirSync(join(stateDir, 'pools'), { recursive: true });
    writeFileSync(join(stateDir, 'pools', `${uid}.mount.json`), JSON.stringify({ mountPoint }));
  };

  it('is the point when it is left as a plain directory: the file system is unmounted', async () => {
    const point = mkdtempSync(join(tmpdir(), 'lvo-unmounted-'));
    try {
      recorded('uid-unmounted', point);
      expect(await lostMountPoint(stateDir, 'uid-unmounted', join(point, 'pool'))).toBe(point);
    } finally {
      rmSync(point, { recursive: true, force: true });
    }
  });

  it("is nothing where the point is not there at all: the agent's pod without that host path", async () => {
    // A pool outside the DaemonSet's host paths works for libvirtd on the host; the pod sees
    // neither the disk nor the directory it is mounted on, so it cannot tell it unmounted.
    const point = join(tmpdir(), `lvo-not-in-pod-${randomBytes(3).toString('hex')}`, 'disk');
    recorded('uid-elsewhere', point);
    expect(await lostMountPoint(stateDir, 'uid-elsewhere', join(point, 'pool'))).toBeUndefined();
  });
});
