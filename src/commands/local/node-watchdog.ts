// What a SIGKILLed `local-cluster --node` leaves that the control plane's watchdog (the pids
// file, control-plane.ts REAPER_SOURCE) does not cover: that one kills the processes we started
// (etcd, kube-apiserver, kubelet, containerd, ...), but the pods' containers run under shims
// that containerd detached into their own sessions, their rootfs, shm and netns stay mounted
// under the node's folder, and the pod bridge keeps the subnet's gateway address. The next
// start on the same subnet then refused with "pod subnet ... overlaps", and the old agent
// container kept talking to the host's libvirtd. This watchdog undoes them when its parent
// ends without disarming it, as the node's stop() would have.
import { spawn } from 'node:child_process';

export interface NodeLeftovers {
  /** The pod bridge to delete. */
  bridge?: string;
  /** The node's folder: everything mounted at or under it is unmounted. */
  nodeDir?: string;
  /** runc's root: each container's state.json names its init process (a pid namespace's 1). */
  runcRoot?: string;
  /** containerd's socket: the shims carry it on their command line. */
  containerdAddress?: string;
  /** Whether the emptied kubepods cgroups go too (the host's, shared by any local node). */
  kubepods?: boolean;
}

/**
 * Inline JS (the harness also runs from TypeScript sources under vitest). Its parent's end is
 * the end of its stdin, a pipe only the parent writes to (as REAPER_SOURCE); a 'disarm' line
 * first means the parent cleaned up itself.
 */
export const NODE_WATCHDOG_SOURCE = `
const fs = require('fs');
const { spawnSync } = require('child_process');
const path = require('path');
const w = JSON.parse(process.argv[1]);
let disarmed = false;
let input = '';
const killed = [];
function kill(pid) { try { process.kill(pid, 'SIGKILL'); killed.push(pid); } catch {} }
function alive(pid) { try { process.kill(pid, 0); return true; } catch { return false; } }
function clean() {
  if (disarmed) process.exit(0);
  if (w.runcRoot) {
    let spaces = [];
    try { spaces = fs.readdirSync(w.runcRoot, { withFileTypes: true }); } catch {}
    for (const ns of spaces.filter((e) => e.isDirectory())) {
      let ids = [];
      try { ids = fs.readdirSync(path.join(w.runcRoot, ns.name)); } catch {}
      for (const id of ids) {
        try {
          const s = JSON.parse(fs.readFileSync(path.join(w.runcRoot, ns.name, id, 'state.json'), 'utf8'));
          // The start time guards against a reused PID: only the container's own init is killed.
          const stat = fs.readFileSync('/proc/' + s.init_process_pid + '/stat', 'utf8');
          const start = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
          if (String(s.init_process_start) === start) kill(s.init_process_pid);
        } catch {}
      }
    }
  }
  if (w.containerdAddress) {
    for (const name of fs.readdirSync('/proc')) {
      if (!/^\\d+$/.test(name) || Number(name) === process.pid) continue;
      try {
        // A whole argument (-address PATH), not a substring: another node's socket under a
        // longer folder (/home/me/lvo vs /lvo) contains ours.
        const args = fs.readFileSync('/proc/' + name + '/cmdline', 'utf8').split('\\0');
        if (args.some((a) => a === w.containerdAddress || a.endsWith('=' + w.containerdAddress))) kill(Number(name));
      } catch {}
    }
  }
  // A cgroup with a process in it cannot be removed: wait (up to 3 s) for the killed to go.
  const until = Date.now() + 3000;
  while (killed.some(alive) && Date.now() < until) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
  if (w.nodeDir) {
    // mountinfo names mount points by their real path: a folder given through a symlink
    // (/var/run -> /run on Debian) would match none of them.
    let dir = w.nodeDir;
    try { dir = fs.realpathSync(w.nodeDir); } catch {}
    const points = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\\n')
      .map((l) => (l.split(' ')[4] || '').replace(/\\\\(\\d{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8))))
      .filter((p) => p === dir || p.startsWith(dir + '/'))
      .sort((a, b) => b.length - a.length);
    for (const p of points) spawnSync('umount', ['-l', p]);
  }
  if (w.kubepods) {
    // Emptied kubepods cgroups go; one still holding another node's pods stays (rmdir fails).
    const rmTree = (dir) => {
      let entries;
      try { entries = fs.readdirSync(dir, { withFileTypes: true }); } catch { return; }
      for (const e of entries) if (e.isDirectory()) rmTree(path.join(dir, e.name));
      try { fs.rmdirSync(dir); } catch {}
    };
    try { for (const ctl of fs.readdirSync('/sys/fs/cgroup')) rmTree(path.join('/sys/fs/cgroup', ctl, 'kubepods')); } catch {}
  }
  if (w.bridge) spawnSync('ip', ['link', 'del', w.bridge]);
  process.exit(0);
}
process.stdin.on('data', (d) => { input += d; if (input.includes('disarm')) disarmed = true; });
process.stdin.on('end', clean);
process.stdin.on('error', clean);
`;

export interface NodeWatchdog {
  /** After a clean stop: ends the watchdog without it touching anything. */
  disarm(): void;
}

/** Arms a detached watchdog that removes `leftovers` should this process die without disarm(). */
export function armNodeWatchdog(leftovers: NodeLeftovers): NodeWatchdog {
  const child = spawn(process.execPath, ['-e', NODE_WATCHDOG_SOURCE, JSON.stringify(leftovers)], {
    stdio: ['pipe', 'ignore', 'ignore'],
    detached: true,
  });
  child.unref();
  (child.stdin as unknown as { unref?: () => void } | null)?.unref?.();
  child.stdin?.on('error', () => undefined);
  let done = false;
  return {
    disarm() {
      if (done) return;
      done = true;
      child.stdin?.end('disarm\n');
    },
  };
}
