#!/usr/bin/env bash
# PID 1 of a MiniCluster node container until systemd takes over.
#
# Docker starts an unprivileged container with /sys and the cgroup mounts read-only,
# with private mount propagation and without a machine identity. systemd, containerd
# and kubelet need all of these, so this script fixes them and then execs /sbin/init.
# It is idempotent: it runs again on every `vagrant up` of a halted node.
set -o errexit -o nounset -o pipefail

# Directory of the per-node identity kept across restarts of the container.
STATE_DIR="${MINICLUSTER_ENTRY_STATE_DIR:-/etc/minicluster}"
# cgroup roots prepared for kubelet on cgroup v1 hosts (cgroupRoot /kubelet with the
# cgroupfs driver, /kubelet.slice with the systemd driver).
KUBELET_CGROUP_ROOTS=(kubelet kubelet.slice)

info() { echo "minicluster-entry: $*"; }
warn() { echo "minicluster-entry: warning: $*" >&2; }

is_read_only() { findmnt -n -o OPTIONS --target "$1" | tr ',' '\n' | grep -qx ro; }

# --- /sys read-write: containerd and kubelet write sysfs and cgroup files ---
prepare_sys() {
  if is_read_only /sys; then
    mount -o remount,rw /sys
    info "remounted /sys read-write"
  fi
}

# --- shared propagation: kubelet's volume mounts must reach the pods' namespaces ---
prepare_mount_propagation() {
  mount --make-rshared /
}

# --- cgroups writable, so systemd can create its units and kubelet its pods ---
prepare_cgroups() {
  local target
  # A plain remount of a cgroup mount fails with "mount point is busy"; remounting
  # the bind changes only this mount point's read-only flag.
  while read -r target; do
    if is_read_only "${target}"; then
      mount -o remount,bind,rw "${target}"
    fi
  done < <(findmnt -r -n -o TARGET -t cgroup,cgroup2)
  if [[ "$(stat -f -c %T /sys/fs/cgroup)" == tmpfs ]]; then
    prepare_kubelet_cgroups_v1
  fi
}

# --- cgroup v1: one kubelet root in every hierarchy, present before kubelet starts ---
prepare_kubelet_cgroups_v1() {
  local hierarchy root
  # Keep the bind mounts below out of the propagation made shared above.
  mount --make-rprivate /sys/fs/cgroup
  while read -r hierarchy; do
    for root in "${KUBELET_CGROUP_ROOTS[@]}"; do
      mkdir -p "${hierarchy}/${root}"
      # A new cpuset group starts with no CPUs and no memory nodes; a process can
      # join it only after it gets its parent's.
      if [[ -f "${hierarchy}/cpuset.cpus" ]]; then
        cat "${hierarchy}/cpuset.cpus" >"${hierarchy}/${root}/cpuset.cpus"
        cat "${hierarchy}/cpuset.mems" >"${hierarchy}/${root}/cpuset.mems"
      fi
      # A group that is also a mount point cannot be removed, so systemd cannot
      # clean it up as an unknown group while kubelet is not running yet.
      if ! mountpoint -q "${hierarchy}/${root}"; then
        mount --bind "${hierarchy}/${root}" "${hierarchy}/${root}"
      fi
    done
  done < <(findmnt -r -n -o TARGET -t cgroup)
  info "prepared kubelet cgroup roots on cgroup v1: ${KUBELET_CGROUP_ROOTS[*]}"
}

# --- identity: each node its own machine-id, product_uuid and SSH host keys ---
prepare_identity() {
  mkdir -p "${STATE_DIR}"
  if [[ ! -s /etc/machine-id ]]; then
    systemd-machine-id-setup
  fi
  # All containers share the host's DMI, so kubelet would report one system UUID for
  # every node; a per-node file is bound over it.
  if [[ ! -s "${STATE_DIR}/product_uuid" ]]; then
    cat /proc/sys/kernel/random/uuid >"${STATE_DIR}/product_uuid"
  fi
  if [[ -f /sys/class/dmi/id/product_uuid ]] \
    && ! mountpoint -q /sys/class/dmi/id/product_uuid; then
    mount -o ro,bind "${STATE_DIR}/product_uuid" /sys/class/dmi/id/product_uuid
  fi
  # The image ships without host keys, so that nodes do not share them.
  if ! compgen -G '/etc/ssh/ssh_host_*_key' >/dev/null; then
    ssh-keygen -A
    info "generated SSH host keys"
  fi
}

# --- a resolver pods can reach: Docker's embedded one lives in the node's namespace ---
prepare_resolv_conf() {
  # A node on a user-defined network gets 127.0.0.11, Docker's resolver inside the
  # node's own network namespace. kubelet hands this file to CoreDNS, which would
  # then forward to its own loopback and stop on a detected loop. The Docker host,
  # the node's default gateway, is an address pods can reach.
  local gateway
  grep -q '^nameserver 127\.0\.0\.11$' /etc/resolv.conf || return 0
  gateway="$(ip -4 route show default | awk '{ print $3; exit }')"
  if [[ -z "${gateway}" ]]; then
    warn "no default route: /etc/resolv.conf keeps Docker's 127.0.0.11"
    return 0
  fi
  # /etc/resolv.conf is a bind mount: rewrite it in place, never replace it.
  sed "s/^nameserver 127\.0\.0\.11$/nameserver ${gateway}/" /etc/resolv.conf >/tmp/resolv.conf
  cat /tmp/resolv.conf >/etc/resolv.conf
  rm -f /tmp/resolv.conf
  info "resolver 127.0.0.11 replaced by the Docker host ${gateway}"
}

# --- units for file systems the host kernel lacks are masked for this boot ---
mask_missing_filesystems() {
  # nfs-common mounts rpc_pipefs for the NFS client; a kernel built without NFS
  # has no such file system, and the failed mount would degrade the boot.
  if ! grep -qw rpc_pipefs /proc/filesystems; then
    mkdir -p /run/systemd/system
    ln -sf /dev/null /run/systemd/system/run-rpc_pipefs.mount
    info "no rpc_pipefs in this kernel: masked run-rpc_pipefs.mount"
  fi
}

main() {
  prepare_sys
  prepare_mount_propagation
  prepare_cgroups
  prepare_identity
  prepare_resolv_conf
  mask_missing_filesystems
  # systemd adapts to a container (no getty, no udev) when told so.
  export container=docker
  info "starting systemd"
  exec /sbin/init "$@"
}

main "$@"
