#!/usr/bin/env bash
# The NFS server node: the share exported read-write to the node subnet only.
# Storage only, no Kubernetes needed. Safe to run again: exports are re-read.
#
# Environment (from the Vagrantfile): MINICLUSTER_NFS_EXPORT_PATH,
# MINICLUSTER_NODE_SUBNET, MINICLUSTER_PROVIDER, MINICLUSTER_BUNDLE_DIR.
set -o errexit -o nounset -o pipefail

# Vagrant uploads this file alone (as /tmp/vagrant-shell); its library stays in
# the synced folder. The step name labels the log lines.
MINICLUSTER_STEP="nfs-server"
MINICLUSTER_PROVISION_DIR="${MINICLUSTER_PROVISION_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
[[ -f "${MINICLUSTER_PROVISION_DIR}/lib.sh" ]] || MINICLUSTER_PROVISION_DIR=/vagrant/provision
# shellcheck source=provision/lib.sh
source "${MINICLUSTER_PROVISION_DIR}/lib.sh"

EXPORTS_FILE=/etc/exports.d/minicluster.exports

# --- nfs-kernel-server: from the distribution, or already in the node image ---
install_nfs_server() {
  if command -v exportfs >/dev/null; then
    skip "nfs-kernel-server is installed"
    return 0
  fi
  apt_install nfs-kernel-server
}

# --- the directory: root on the clients is squashed to nobody, who owns it ---
create_export_directory() {
  local path="${MINICLUSTER_NFS_EXPORT_PATH}"
  if [[ -d "${path}" ]]; then
    skip "${path} exists"
  else
    install -d -m 2775 "${path}"
    info "created ${path}"
  fi
  chown nobody:nogroup "${path}"
}

# --- the export, to the node subnet and nothing wider ---
export_share() {
  # sync: a write is on disk before the client hears it is done.
  write_file "${EXPORTS_FILE}" 0644 \
    <<<"${MINICLUSTER_NFS_EXPORT_PATH} ${MINICLUSTER_NODE_SUBNET}(rw,sync,no_subtree_check,root_squash)"
  systemctl enable --quiet nfs-server
  if ! systemctl is-active --quiet nfs-server; then
    systemctl start nfs-server
    info "started nfs-server"
  fi
  exportfs -ra
  exportfs -v | grep -q "^${MINICLUSTER_NFS_EXPORT_PATH}[[:space:]]" ||
    fatal "exportfs does not list ${MINICLUSTER_NFS_EXPORT_PATH} after exportfs -ra; see journalctl -u nfs-server"
  info "exporting ${MINICLUSTER_NFS_EXPORT_PATH} to ${MINICLUSTER_NODE_SUBNET}"
}

main() {
  require_env MINICLUSTER_NFS_EXPORT_PATH MINICLUSTER_NODE_SUBNET MINICLUSTER_PROVIDER
  if ! kernel_has_filesystem nfsd; then
    skip "this kernel has no NFS server (no nfsd in /proc/filesystems); the share is not exported"
    return 0
  fi
  install_nfs_server
  create_export_directory
  export_share
}

# Sourcing the file (as the unit tests do) defines the steps without running them.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
