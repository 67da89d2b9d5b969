#!/usr/bin/env bash
# Builds the tiny real guest used by end-to-end tests: Debian's cloud kernel plus a busybox
# initramfs that loads the virtio drivers, takes a DHCP lease, answers the ACPI power button,
# onlines hot-plugged CPUs and reports all of it as marker lines on the serial console.
#
# Output: ${LIBVIRT_OPERATOR_CACHE:-${XDG_CACHE_HOME:-~/.cache}/libvirt-operator}/guest/<kernel-version>-<recipe>/
#   vmlinuz, initrd.img, .complete (holds the hash of this script). <recipe> is the first 12
#   hex digits of that hash, so two checkouts with different recipes (branches, worktrees)
#   each keep their own guest instead of rebuilding over each other's files.
# Only Debian packages are used: the linux-image-*-cloud-amd64 that linux-image-cloud-amd64
# depends on (apt-get download, dpkg -x) and the installed busybox-static. Debian's busybox
# has no DHCPv6 client (no udhcpc6), so dhcpcd comes from dhcpcd-base (apt-get download too),
# with the libc6 files it links against copied from the host.
#
# Usage: build-tiny-guest.sh [--print-dir]
#   --print-dir  print only the result directory on stdout (status goes to stderr); for tools.
set -euo pipefail

PRINT_DIR=0
case "${1:-}" in
  '') ;;
  --print-dir) PRINT_DIR=1 ;;
  *) echo "build-tiny-guest: unknown argument '$1' (only --print-dir)" >&2; exit 2 ;;
esac

say() { if [[ $PRINT_DIR == 1 ]]; then echo "$@" >&2; else echo "$@"; fi; }
die() { echo "build-tiny-guest: $*" >&2; exit 1; }

CACHE_ROOT="${LIBVIRT_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/libvirt-operator}/guest"
BUSYBOX=/bin/busybox
RECIPE_HASH="$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"

# Dependency order matters: insmod has no dependency resolution and a module loaded before
# the ones it uses fails with "Unknown symbol". button+evdev give acpid the power button.
MODULES=(
  virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
  virtio_balloon failover net_failover virtio_net virtio_blk button evdev
  scsi_common scsi_mod virtio_scsi cdrom sr_mod isofs
)
# The cloud kernel has no AHCI driver (CONFIG_SATA_AHCI is not set): a sata CD-ROM stays
# invisible to this guest, a CD-ROM on virtio-scsi (the last six modules) is readable.

# Resolve the kernel the meta package points at today. Without apt lists (a fresh machine
# before `apt-get update`) fall back to the newest complete build already in the cache.
# No `| head` anywhere in this script: under pipefail the writer dies of SIGPIPE when head
# exits first (`sed -n 1p` reads all of its input; test/unit/deploy/shell-pipes.test.ts).
kernel_package() {
  apt-cache depends linux-image-cloud-amd64 2>/dev/null \
    | sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | sed -n 1p
}

# apt-cache costs ~0.8 s here (no pkgcache.bin); the answer only changes when the apt lists
# do, so remember it until an `apt-get update` writes newer lists.
RESOLVED="$CACHE_ROOT/.resolved-package"
LISTS=/var/lib/apt/lists
if [[ -s "$RESOLVED" && -z "$(find "$LISTS" -maxdepth 1 -name '*Packages*' -newer "$RESOLVED" 2>/dev/null)" ]]; then
  PACKAGE="$(cat "$RESOLVED")"
else
  PACKAGE="$(kernel_package || true)"
  if [[ -n "$PACKAGE" ]]; then mkdir -p "$CACHE_ROOT" && echo "$PACKAGE" > "$RESOLVED"; fi
fi
if [[ -n "$PACKAGE" ]]; then
  VERSION="${PACKAGE#linux-image-}"
else
  VERSION="$(ls -1 "$CACHE_ROOT" 2>/dev/null | grep -e "-${RECIPE_HASH:0:12}\$" | sort -V | while read -r v; do
    [[ -f "$CACHE_ROOT/$v/.complete" ]] && echo "${v%-*}"; done | tail -n1 || true)"
  [[ -n "$VERSION" ]] || die "cannot resolve linux-image-cloud-amd64 with apt-cache and nothing is cached for this recipe; run: apt-get update"
fi

OUT="$CACHE_ROOT/$VERSION-${RECIPE_HASH:0:12}"
is_current() { [[ -f "$OUT/.complete" && "$(cat "$OUT/.complete")" == "$RECIPE_HASH" ]]; }
finish() {
  say "$1"
  if [[ $PRINT_DIR == 1 ]]; then echo "$OUT"; fi
  exit 0
}

if is_current; then finish "build-tiny-guest: cached $VERSION in $OUT"; fi
[[ -n "$PACKAGE" ]] || finish "build-tiny-guest: using cached $VERSION (apt lists unavailable to check for a newer kernel)"

command -v cpio >/dev/null || die "cpio is missing; run scripts/install-host-deps.sh (or apt-get install cpio)"
[[ -x "$BUSYBOX" ]] && "$BUSYBOX" --list | grep -x udhcpc >/dev/null \
  || die "$BUSYBOX with udhcpc is missing; run scripts/install-host-deps.sh (or apt-get install busybox-static)"
# Debian's plain busybox package also installs /bin/busybox, but linked dynamically: it
# cannot run in an initramfs that has no libc.
[[ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null || true)" == *"install ok installed"* ]] \
  || die "busybox-static is not installed (a dynamic busybox cannot run in the initramfs); run scripts/install-host-deps.sh"

mkdir -p "$CACHE_ROOT"
# Two test processes may build at once; the second waits, then finds the result cached.
exec 9>"$CACHE_ROOT/.lock"
flock 9
if is_current; then finish "build-tiny-guest: cached $VERSION in $OUT (built concurrently)"; fi

START=$SECONDS
WORK="$(mktemp -d "$CACHE_ROOT/.build-$VERSION.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
say "build-tiny-guest: building $VERSION (downloading $PACKAGE)"

# apt-get download writes into the current directory; as root it warns that _apt cannot
# write there, which is harmless.
(cd "$WORK" && apt-get download -qq "$PACKAGE" 2>&1 | grep -v 'unsandboxed' >&2 || true)
debs=("$WORK"/"$PACKAGE"_*.deb)
DEB="${debs[0]}"
[[ -f "$DEB" ]] || die "apt-get download $PACKAGE failed (is the Debian mirror reachable?)"
dpkg -x "$DEB" "$WORK/pkg"
(cd "$WORK" && apt-get download -qq dhcpcd-base 2>&1 | grep -v 'unsandboxed' >&2 || true)
dhcpcd_debs=("$WORK"/dhcpcd-base_*.deb)
DHCPCD_DEB="${dhcpcd_debs[0]}"
[[ -f "$DHCPCD_DEB" ]] || die "apt-get download dhcpcd-base failed (is the Debian mirror reachable?)"
dpkg -x "$DHCPCD_DEB" "$WORK/dhcpcd"

ROOT="$WORK/root"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,run,tmp,etc/acpi/PWRF,lib/modules}
cp "$BUSYBOX" "$ROOT/bin/busybox"
# Applet links at build time: `busybox --install` at boot needs /proc and costs boot time.
while read -r applet; do
  [[ -e "$ROOT/$applet" ]] || ln -s /bin/busybox "$ROOT/$applet"
done < <("$BUSYBOX" --list-full)

for m in "${MODULES[@]}"; do
  src="$(find "$WORK/pkg/lib/modules" \( -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" \
    -o -name "$m.ko.gz" \) -print -quit)"
  [[ -n "$src" ]] || die "module $m not found in $PACKAGE"
  # busybox insmod reads only plain .ko files: decompress here, once.
  case "$src" in
    *.ko.xz) xz -dc "$src" > "$ROOT/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$src" > "$ROOT/lib/modules/$m.ko" ;;
    *.ko.gz) gzip -dc "$src" > "$ROOT/lib/modules/$m.ko" ;;
    *) cp "$src" "$ROOT/lib/modules/$m.ko" ;;
  esac
done
printf '%s\n' "${MODULES[@]}" > "$ROOT/lib/modules/load-order"

# dhcpcd for DHCPv6, with the shared libraries it needs (libc and the loader, today).
cp "$WORK/dhcpcd/usr/sbin/dhcpcd" "$ROOT/usr/sbin/dhcpcd"
for lib in $(ldd "$ROOT/usr/sbin/dhcpcd" | grep -o '/[^ ]*'); do
  mkdir -p "$ROOT$(dirname "$lib")"
  cp -L "$lib" "$ROOT$lib"
done
mkdir -p "$ROOT/var/lib/dhcpcd"
# IPv6 only (udhcpc does IPv4), ask for an address (IA_NA) without waiting for a router.
# noipv6rs: dnsmasq's router advertisements are the kernel's business, not dhcpcd's.
printf '%s\n' ipv6only noipv4ll noipv6rs ia_na 'option rapid_commit' > "$ROOT/etc/dhcpcd.conf"

cat > "$ROOT/init" <<'INIT'
#!/bin/sh
# PID 1 of the tiny guest. Marker lines on /dev/console (ttyS0) are the test interface:
#   LVO-GUEST-READY <boot-id>            drivers loaded, power button handled; the id is new
#                                        every boot (QEMU empties the log on each start)
#   LVO-GUEST-CPUS <n>                   online CPU count, at start and on every change
#   LVO-GUEST-IP <addr> <iface> <mac>    a DHCP lease was bound
#   LVO-GUEST-DISKS [names...]           virtio disks (vda ...), at start and on every change
#   LVO-GUEST-POWEROFF                   the ACPI power button was pressed
#   LVO-GUEST-IP6 <addr> <iface> <mac>   a DHCPv6 lease was bound
#   LVO-GUEST-EFI yes|no                 booted by UEFI firmware (/sys/firmware/efi exists)
#   LVO-GUEST-SECUREBOOT 0|1             the kernel found secure boot enabled (UEFI only)
#   LVO-GUEST-TPM <dev> <driver> <major> a TPM the kernel found (tpm0 tpm_crb 2), or none
#   LVO-GUEST-DATA <text>                with lvo.data=<disk> on the kernel command line: the
#                                        first 64 bytes of /dev/<disk> at boot (or 'none')
#   LVO-GUEST-DATA-WROTE boot-<boot-id>  ... then what this boot wrote there instead
#   LVO-GUEST-TICK <n>                   with lvo.tick on the command line: a counter that
#                                        lives only in guest memory, +1 every second
#   LVO-GUEST-TOPOLOGY <s> <c> <t>       sockets, cores per socket, threads per core (from
#                                        /sys/devices/system/cpu/*/topology), at start
#   LVO-GUEST-CDROM <text>               the first line of lvo-cdrom.txt on a CD-ROM (sr0), once
#   LVO-GUEST-UPTIME <seconds>           every 2 s: the guest's own clock (stops while paused)
#   LVO-GUEST-SUSPEND / LVO-GUEST-RESUMED  lvo-suspend (typed on the console) suspends the guest
#                                        to RAM (S3) and says when it is back
# ttyS0 also runs a shell without a prompt; the tty echoes what is typed into it.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t devtmpfs dev /dev
# The initramfs has no /dev/console node (creating one needs root at build time), so the
# kernel started us without stdio: attach it now that devtmpfs is mounted.
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs run /run
hostname lvo-tiny-guest
for m in $(cat /lib/modules/load-order); do
  insmod "/lib/modules/$m.ko" || echo "LVO-GUEST-ERROR insmod $m"
done
# Without this the kernel's "module verification failed" and similar lines interleave
# with our markers on the console.
echo 1 > /proc/sys/kernel/printk

# acpid opens /dev/input/event* once, at start: button and evdev must be loaded before.
acpid -c /etc/acpi -l /run/acpid.log

# The EUI-64 link-local address of a MAC: 52:54:00:e6:00:0e -> fe80::5054:ff:fee6:e.
link_local() {
  IFS=: read -r a b c d e f <<MAC
$1
MAC
  printf 'fe80::%x:%x:%x:%x\n' $(((0x$a ^ 2) * 256 + 0x$b)) $((0x$c * 256 + 0xff)) \
    $((0xfe00 + 0x$d)) $((0x$e * 256 + 0x$f))
}

ip link set lo up
for dev in /sys/class/net/eth*; do
  [ -e "$dev" ] || continue
  iface="${dev##*/}"
  ip link set "$iface" up
  # Foreground mode in a background job: udhcpc keeps renewing and PID 1 stays free.
  udhcpc -f -i "$iface" -s /etc/udhcpc.script -x hostname:lvo-tiny-guest -t 5 -T 1 -A 1 >/dev/null 2>&1 &
  # DHCPv6 in the background too; on a network without it dhcpcd keeps asking, quietly.
  dhcpcd -6 -B -q -f /etc/dhcpcd.conf -c /etc/dhcpcd6.script "$iface" >/dev/null 2>&1 &
  # Measured: on the first boot of a new MAC, dhcpcd switches the kernel's link-local address
  # off and its own never appears, so every request fails (EADDRNOTAVAIL). dhcpcd keeps
  # retrying: put the usual EUI-64 address back while it does, until the lease is bound (the
  # lease script leaves a mark) or for 5 minutes. The window was a fixed 20 s: in one CI run
  # of 25 (2026-12-05, a loaded host) the guest got no lease within 120 s, its console showing
  # nothing but uptime; the cause was not seen, and a window that closes early is the one part
  # of this that gives up.
  (
    ll=$(link_local "$(cat "$dev/address")")
    i=0
    while [ "$i" -lt 300 ] && [ ! -e "/var/lib/dhcpcd/bound6-$iface" ]; do
      sleep 1
      i=$((i + 1))
      ip -6 addr show dev "$iface" scope link | grep -q inet6 || ip -6 addr add "$ll/64" dev "$iface"
    done
  ) >/dev/null 2>&1 &
done

# Firmware and TPM, once: before READY, so READY means they were reported.
if [ -d /sys/firmware/efi ]; then
  echo "LVO-GUEST-EFI yes"
  # The kernel read the firmware's SecureBoot variable at boot and said so.
  if dmesg | grep -q 'secureboot: Secure boot enabled'; then
    echo "LVO-GUEST-SECUREBOOT 1"
  else
    echo "LVO-GUEST-SECUREBOOT 0"
  fi
else
  echo "LVO-GUEST-EFI no"
fi
tpms=''
for t in /sys/class/tpm/tpm[0-9]*; do
  [ -e "$t" ] || continue
  drv=$(basename "$(readlink "$t/device/driver")")
  tpms="$tpms ${t##*/} $drv $(cat "$t/tpm_version_major" 2>/dev/null || echo unknown)"
done
echo "LVO-GUEST-TPM${tpms:- none}"
# A shell on the serial port, for `libvirt-operator console`. It reads commands from the tty
# as a script (`. /proc/self/fd/0`), not with ash's line editor: that one prints no prompt
# with PS1 empty but still asks the terminal for the cursor (ESC [6n) before each command,
# which would land in front of the next marker line. The tty's own echo shows what is typed.
# The real tty (not /dev/console, which cannot be a controlling terminal) so Ctrl-C reaches
# the running command (the shell itself traps it); respawned when it exits.
(
  while :; do
    PS1='' PS2='' setsid -c sh +i -c 'trap : INT; . /proc/self/fd/0' </dev/ttyS0 >/dev/ttyS0 2>&1
    sleep 1
  done
) &

cpus=''
disks='unknown'
report() {
  # Hot-plugged CPUs arrive offline (x86 has no kernel auto-online): bring them up.
  for f in /sys/devices/system/cpu/cpu[0-9]*/online; do
    [ -e "$f" ] && [ "$(cat "$f")" = 0 ] && echo 1 > "$f"
  done
  n=$(grep -c '^processor' /proc/cpuinfo)
  [ "$n" != "$cpus" ] && cpus=$n && echo "LVO-GUEST-CPUS $n"
  d=$(cd /sys/block && echo vd* | sed 's/vd\*//')
  [ "$d" != "$disks" ] && disks=$d && echo "LVO-GUEST-DISKS $d"
}
# Disk reads the guest-metrics test can watch grow: every 2 s, 64 KiB of each virtio disk at
# an offset that moves, with the page cache dropped first so the read reaches the device.
(
  off=0
  while :; do
    sleep 2
    echo 3 > /proc/sys/vm/drop_caches
    for b in /dev/vd?; do
      [ -b "$b" ] && dd if="$b" of=/dev/null bs=64k count=1 skip="$off" 2>/dev/null
    done
    off=$(( (off + 1) % 64 ))
  done
) &
# lvo.data=<disk>: a value that lives on a disk, for snapshot tests that must tell the disk's
# state before and after a restore without a shell in the guest. Each boot prints what the
# disk held and writes its own boot id there (flushed, so a snapshot taken afterwards has it).
datadisk=''
tick=''
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    lvo.data=*) datadisk="${arg#lvo.data=}" ;;
    lvo.tick) tick=0 ;;
  esac
done
if [ -n "$datadisk" ]; then
  for i in 1 2 3 4 5; do [ -b "/dev/$datadisk" ] && break; sleep 1; done
  old=$(dd if="/dev/$datadisk" bs=64 count=1 2>/dev/null | tr -cd 'A-Za-z0-9-')
  echo "LVO-GUEST-DATA ${old:-none}"
  new="boot-$(cat /proc/sys/kernel/random/boot_id)"
  printf '%-64s' "$new" | dd of="/dev/$datadisk" bs=64 count=1 conv=fsync 2>/dev/null
  echo "LVO-GUEST-DATA-WROTE $new"
fi
# Extra reports, kept apart from report(): CPU topology once, the CD-ROM's marker file once it
# shows up (virtio-scsi probes asynchronously), DHCP on NICs hot-plugged later, and the uptime.
topology() {
  n=0; pkgs=''; cores=''
  for t in /sys/devices/system/cpu/cpu[0-9]*/topology; do
    n=$((n + 1))
    pkg=$(cat "$t/physical_package_id")
    pkgs="$pkgs $pkg"
    cores="$cores $pkg:$(cat "$t/core_id")"
  done
  s=$(printf '%s\n' $pkgs | sort -u | wc -l)
  k=$(printf '%s\n' $cores | sort -u | wc -l)
  echo "LVO-GUEST-TOPOLOGY $s $((k / s)) $((n / k))"
}
cdrom=''
beat=0
day2_report() {
  if [ -z "$cdrom" ] && [ -b /dev/sr0 ]; then
    mkdir -p /mnt/cdrom
    if mount -t iso9660 -o ro /dev/sr0 /mnt/cdrom 2>/dev/null; then
      cdrom=done
      echo "LVO-GUEST-CDROM $(head -n 1 /mnt/cdrom/lvo-cdrom.txt 2>/dev/null)"
    fi
  fi
  for dev in /sys/class/net/eth*; do
    [ -e "$dev" ] || continue
    iface="${dev##*/}"
    [ -e "/run/dhcp.$iface" ] && continue
    : > "/run/dhcp.$iface"
    ip link set "$iface" up
    udhcpc -f -i "$iface" -s /etc/udhcpc.script -x hostname:lvo-tiny-guest -t 5 -T 1 -A 1 >/dev/null 2>&1 &
  done
  beat=$((beat + 1))
  [ $((beat % 2)) = 0 ] && echo "LVO-GUEST-UPTIME $(cut -d' ' -f1 /proc/uptime)"
}
# The NICs present at boot already have their udhcpc (started above).
for dev in /sys/class/net/eth*; do [ -e "$dev" ] && : > "/run/dhcp.${dev##*/}"; done
topology

# The initial CPUS and DISKS lines come before READY, so READY means "state reported".
report
echo "LVO-GUEST-READY $(cat /proc/sys/kernel/random/boot_id)"
while :; do
  sleep 1
  report
  # lvo.tick: a counter in guest memory only; a restored memory checkpoint sends it back.
  if [ -n "$tick" ]; then tick=$((tick + 1)); echo "LVO-GUEST-TICK $tick"; fi
  day2_report
done
INIT

cat > "$ROOT/etc/udhcpc.script" <<'DHCP'
#!/bin/sh
# Called by udhcpc with $1 = deconfig|bound|renew|leasefail|nak and the lease in env vars.
case "$1" in
  deconfig)
    ip addr flush dev "$interface"
    ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    mac=$(cat "/sys/class/net/$interface/address")
    [ "$1" = bound ] && echo "LVO-GUEST-IP $ip $interface $mac" > /dev/console
    ;;
esac
exit 0
DHCP

cat > "$ROOT/etc/dhcpcd6.script" <<'DHCP6'
#!/bin/sh
# Called by dhcpcd with $reason (BOUND6, RENEW6, ...) and the lease in env vars.
case "$reason" in
  BOUND6|REBOOT6)
    mac=$(cat "/sys/class/net/$interface/address")
    : > "/var/lib/dhcpcd/bound6-$interface"
    echo "LVO-GUEST-IP6 $new_dhcp6_ia_na1_ia_addr1 $interface $mac" > /dev/console
    ;;
esac
exit 0
DHCP6

# busybox acpid maps the power button key to the event file PWRF/00000080 in its config dir.
cat > "$ROOT/etc/acpi/PWRF/00000080" <<'POWER'
#!/bin/sh
echo LVO-GUEST-POWEROFF > /dev/console
# -f: there is no init to signal (PID 1 is the /init script); the initramfs needs no sync.
poweroff -f
POWER
# Suspend to RAM (S3, libvirt's pmsuspended) on request, for the tests of a guest that
# suspended itself. Measured (QEMU 7.2, q35, SeaBIOS): QEMU resets the machine on wake-up and
# SeaBIOS's resume path does not program the LPC bridge again, so its ACPI I/O block is off
# (PMBASE 0x40 and ACPI_CNTL 0x44 read 01 00 00 00 00 instead of 01 06 00 00 80) and Linux,
# which restores only the standard PCI header, never turns it back on: the power button
# (QEMU's system_powerdown) then sets its status bit but no SCI ever arrives, and an ACPI
# shutdown goes unanswered. So put the two registers back and enable the fixed power-button
# event again; a press made while the guest was waking is still pending and fires now.
cat > "$ROOT/bin/lvo-suspend" <<'SUSPEND'
#!/bin/sh
lpc=/sys/bus/pci/devices/0000:00:1f.0/config
dd if="$lpc" of=/run/lpc-acpi bs=8 skip=8 count=1 2>/dev/null
echo LVO-GUEST-SUSPEND > /dev/console
echo mem > /sys/power/state
dd if=/run/lpc-acpi of="$lpc" bs=8 seek=8 count=1 conv=notrunc 2>/dev/null
echo enable > /sys/firmware/acpi/interrupts/ff_pwr_btn
echo LVO-GUEST-RESUMED > /dev/console
SUSPEND
chmod 755 "$ROOT/init" "$ROOT/etc/udhcpc.script" "$ROOT/etc/acpi/PWRF/00000080" "$ROOT/etc/dhcpcd6.script" \
  "$ROOT/bin/lvo-suspend"

cp "$WORK/pkg/boot/vmlinuz-$VERSION" "$WORK/vmlinuz"
(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z \
  | cpio --null -o -H newc --owner=0:0 --quiet | gzip -6) > "$WORK/initrd.img"

# Replace file by file (rename is atomic), so a test that already holds these paths never
# sees them missing; .complete goes last and marks the pair consistent again.
mkdir -p "$OUT"
rm -f "$OUT/.complete"
mv -f "$WORK/vmlinuz" "$WORK/initrd.img" "$OUT/"
echo "$RECIPE_HASH" > "$OUT/.complete"
# Older kernels are dead weight (~16 MB each) once the meta package points elsewhere; other
# recipes of the same kernel stay (another checkout may use one), the 8 newest of them.
for old in "$CACHE_ROOT"/*/; do
  case "${old%/}" in "$CACHE_ROOT/$VERSION"-*) ;; *) rm -rf "${old%/}" ;; esac
done
ls -1dt "$CACHE_ROOT/$VERSION"-*/ 2>/dev/null | tail -n +9 | while read -r extra; do
  [[ "${extra%/}" == "$OUT" ]] || rm -rf "${extra%/}"
done
finish "build-tiny-guest: built $VERSION in $OUT ($((SECONDS - START)) s, initrd $(($(stat -c %s "$OUT/initrd.img") / 1024)) KiB)"
