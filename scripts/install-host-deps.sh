#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, only those that are missing.
# Idempotent and quiet when everything is present.
set -euo pipefail

PACKAGES=(
  libvirt-dev libvirt0 libvirt-clients libvirt-daemon libvirt-daemon-driver-qemu
  libvirt-daemon-config-network qemu-system-x86 qemu-utils dnsmasq-base iptables
  cpio busybox-static genisoimage libxml2-utils
  # The peers the binding and the operator are compared with (tests and bench/).
  python3-libvirt ansible
  lua5.4
  # firmware: uefi (OVMF, with QEMU's firmware descriptors) and tpm (swtpm, swtpm_setup).
  ovmf swtpm swtpm-tools
  # libvirtd runs under tini as a child subreaper, so QEMU processes are reaped at once
  # (src/commands/local/libvirtd.ts says why).
  tini
)
# `local-cluster --node` (containerd, runc and the kubelet are built by provision-node.sh):
# the CNI plugins (bridge, host-local, loopback), ip for the pod bridge, gcc and libseccomp-dev
# for runc and the pod sandbox binary, openssl for the kubelet's client certificate.
PACKAGES+=(containernetworking-plugins iproute2 gcc libc6-dev libseccomp-dev pkg-config openssl)
# Extra packages a host needs (space separated), e.g. for a custom guest image tool.
read -r -a EXTRA <<< "${LIBVIRT_OPERATOR_EXTRA_PACKAGES:-}"
PACKAGES+=("${EXTRA[@]}")

missing=()
for p in "${PACKAGES[@]}"; do
  # A test, not `| grep -q`: under pipefail dpkg-query could die of SIGPIPE when grep exits.
  if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != *"install ok installed"* ]]; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-host-deps: all Debian packages present"
  exit 0
fi

if [[ "$(id -u)" != 0 ]]; then
  echo "install-host-deps: missing Debian packages: ${missing[*]}; run as root or: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "install-host-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# An old or missing package list makes apt-get install fail to find packages.
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-host-deps: done"
