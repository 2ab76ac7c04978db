#!/usr/bin/env bash
# Every node: the share mounted at the mount point, now and at every boot.
# Storage only, no Kubernetes needed. Safe to run again: a mounted share is kept.
#
# Environment (from the Vagrantfile): MINICLUSTER_NFS_SERVER_IP,
# MINICLUSTER_NFS_EXPORT_PATH, MINICLUSTER_NFS_MOUNT_POINT, MINICLUSTER_PROVIDER.
set -o errexit -o nounset -o pipefail

# Vagrant uploads this file alone (as /tmp/vagrant-shell); its library stays in
# the synced folder. The step name labels the log lines.
MINICLUSTER_STEP="nfs-mount"
MINICLUSTER_PROVISION_DIR="${MINICLUSTER_PROVISION_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
[[ -f "${MINICLUSTER_PROVISION_DIR}/lib.sh" ]] || MINICLUSTER_PROVISION_DIR=/vagrant/provision
# shellcheck source=provision/lib.sh
source "${MINICLUSTER_PROVISION_DIR}/lib.sh"

# --- the client: mount.nfs comes with nfs-common ("bad option ... helper" without) ---
install_nfs_client() {
  if command -v mount.nfs >/dev/null; then
    skip "nfs-common is installed"
    return 0
  fi
  apt_install nfs-common
}

# --- fstab: _netdev waits for the network, nofail keeps a boot without the server ---
add_fstab_entry() {
  local source="${MINICLUSTER_NFS_SERVER_IP}:${MINICLUSTER_NFS_EXPORT_PATH}"
  local entry="${source} ${MINICLUSTER_NFS_MOUNT_POINT} nfs defaults,_netdev,nofail 0 0"
  if grep -qxF "${entry}" /etc/fstab; then
    skip "/etc/fstab mounts ${source} already"
    return 0
  fi
  # Replace an older entry for the mount point, keep everything else.
  sed -i "\\|^[^#][^[:space:]]*[[:space:]]${MINICLUSTER_NFS_MOUNT_POINT}[[:space:]]|d" /etc/fstab
  echo "${entry}" >>/etc/fstab
  systemctl daemon-reload # the fstab generator makes the mount unit
  info "added ${source} on ${MINICLUSTER_NFS_MOUNT_POINT} to /etc/fstab"
}

share_is_mounted() { findmnt -n -t nfs,nfs4 "${MINICLUSTER_NFS_MOUNT_POINT}" >/dev/null; }

# --- mounted now; the server may still be starting on another node ---
mount_share() {
  mkdir -p "${MINICLUSTER_NFS_MOUNT_POINT}"
  if share_is_mounted; then
    skip "${MINICLUSTER_NFS_MOUNT_POINT} is mounted"
    return 0
  fi
  wait_for "the NFS export ${MINICLUSTER_NFS_SERVER_IP}:${MINICLUSTER_NFS_EXPORT_PATH}" \
    mount "${MINICLUSTER_NFS_MOUNT_POINT}"
  info "mounted $(findmnt -n -o SOURCE,FSTYPE "${MINICLUSTER_NFS_MOUNT_POINT}") on ${MINICLUSTER_NFS_MOUNT_POINT}"
}

main() {
  require_env MINICLUSTER_NFS_SERVER_IP MINICLUSTER_NFS_EXPORT_PATH MINICLUSTER_NFS_MOUNT_POINT MINICLUSTER_PROVIDER
  if ! kernel_has_filesystem nfs; then
    skip "this kernel has no NFS client (no nfs in /proc/filesystems); the share is not mounted"
    return 0
  fi
  install_nfs_client
  add_fstab_entry
  mount_share
}

# Sourcing the file (as the unit tests do) defines the steps without running them.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
