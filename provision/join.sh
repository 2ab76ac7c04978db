#!/usr/bin/env bash
# A worker: kubeadm join with a token made for this join alone (short TTL), so a
# worker added months later joins as well as the first ones. Safe to run again:
# a node that has joined is left alone.
#
# Environment (from the Vagrantfile): MINICLUSTER_NODE_NAME, MINICLUSTER_NODE_IP,
# MINICLUSTER_CONTROL_PLANE_IP, MINICLUSTER_SHARED_DIR, MINICLUSTER_PROVIDER.
# The control plane's kubeconfig reaches this node through the shared folder.
set -o errexit -o nounset -o pipefail

# Vagrant uploads this file alone (as /tmp/vagrant-shell); its library stays in
# the synced folder. The step name labels the log lines.
MINICLUSTER_STEP="join"
MINICLUSTER_PROVISION_DIR="${MINICLUSTER_PROVISION_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
[[ -f "${MINICLUSTER_PROVISION_DIR}/lib.sh" ]] || MINICLUSTER_PROVISION_DIR=/vagrant/provision
# shellcheck source=provision/lib.sh
source "${MINICLUSTER_PROVISION_DIR}/lib.sh"

JOIN_CONFIG="${KUBEADM_CONFIG_DIR}/join.yaml"
TOKEN_TTL="${MINICLUSTER_JOIN_TOKEN_TTL:-15m}"

kubeconfig_is_shared() { [[ -s "${MINICLUSTER_SHARED_DIR}/kubeconfig" ]]; }

# --- the join configuration, from a fresh `kubeadm token create` ---
write_join_config() {
  local command endpoint token hash config
  # Providers that bring machines up in parallel may get here before the control
  # plane has finished; its kubeconfig in the shared folder is the signal.
  wait_for "the control plane's kubeconfig in ${MINICLUSTER_SHARED_DIR}" kubeconfig_is_shared
  wait_for "the API server at ${MINICLUSTER_CONTROL_PLANE_IP}:6443" api_is_ready
  command="$(kubeadm token create --ttl "${TOKEN_TTL}" --print-join-command \
    --kubeconfig "${MINICLUSTER_SHARED_DIR}/kubeconfig")"
  # kubeadm join <endpoint> --token <token> --discovery-token-ca-cert-hash <hash>
  read -r _ _ endpoint _ token _ hash <<<"${command}"
  [[ -n "${endpoint}" && -n "${token}" && "${hash}" == sha256:* ]] ||
    fatal "unexpected output of kubeadm token create --print-join-command (not shown: it holds a token)"
  info "created a join token valid for ${TOKEN_TTL}"
  config="$(
    cat <<EOF
apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: ${endpoint}
    token: ${token}
    caCertHashes: [${hash}]
nodeRegistration:
EOF
    kubeadm_node_registration
  )"
  write_file "${JOIN_CONFIG}" 0600 <<<"${config}"
}

# --- kubeadm join, once ---
join_cluster() {
  if [[ -f /etc/kubernetes/kubelet.conf ]]; then
    skip "${MINICLUSTER_NODE_NAME} has joined already (/etc/kubernetes/kubelet.conf exists)"
    return 0
  fi
  write_join_config
  info "kubeadm join ${MINICLUSTER_CONTROL_PLANE_IP}:6443 as ${MINICLUSTER_NODE_NAME}"
  kubeadm join --config "${JOIN_CONFIG}"
  # The token in the file has done its job.
  rm -f "${JOIN_CONFIG}"
}

main() {
  require_env MINICLUSTER_NODE_NAME MINICLUSTER_NODE_IP MINICLUSTER_CONTROL_PLANE_IP MINICLUSTER_SHARED_DIR
  join_cluster
  info "worker ${MINICLUSTER_NODE_NAME} has joined"
}

# Sourcing the file (as the unit tests do) defines the steps without running them.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
