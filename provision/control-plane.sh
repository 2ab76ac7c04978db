#!/usr/bin/env bash
# The control plane: kubeadm init from a config file, the admin kubeconfig handed
# to the host and the workers, Flannel, and a wait until the node is Ready.
# Safe to run again: a running control plane is kept (never "port 6443 in use").
#
# Environment (from the Vagrantfile): MINICLUSTER_NODE_NAME, MINICLUSTER_NODE_IP,
# MINICLUSTER_CONTROL_PLANE_IP, MINICLUSTER_POD_CIDR, MINICLUSTER_SERVICE_CIDR,
# MINICLUSTER_KUBERNETES_VERSION, MINICLUSTER_WORKER_COUNT, MINICLUSTER_SHARED_DIR,
# MINICLUSTER_PROVIDER, MINICLUSTER_FLANNEL_VERSION,
# MINICLUSTER_FLANNEL_CNI_PLUGIN_VERSION, MINICLUSTER_BUNDLE_DIR.
set -o errexit -o nounset -o pipefail

# Vagrant uploads this file alone (as /tmp/vagrant-shell); its library stays in
# the synced folder. The step name labels the log lines.
MINICLUSTER_STEP="control-plane"
MINICLUSTER_PROVISION_DIR="${MINICLUSTER_PROVISION_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
[[ -f "${MINICLUSTER_PROVISION_DIR}/lib.sh" ]] || MINICLUSTER_PROVISION_DIR=/vagrant/provision
# shellcheck source=provision/lib.sh
source "${MINICLUSTER_PROVISION_DIR}/lib.sh"

ADMIN_CONF=/etc/kubernetes/admin.conf
INIT_CONFIG="${KUBEADM_CONFIG_DIR}/init.yaml"
FLANNEL_TEMPLATE="${MINICLUSTER_PROVISION_DIR}/manifests/flannel.yaml.tmpl"

# --- the kubeadm configuration: every setting explicit, nothing guessed ---
kubelet_configuration() {
  cat <<'EOF'
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# The same driver as containerd's SystemdCgroup = true.
cgroupDriver: systemd
EOF
  if cgroup_is_v1; then
    # From 1.35 kubelet refuses cgroup v1 unless told otherwise.
    echo "failCgroupV1: false"
  fi
  if minicluster_provider_is_container; then
    local max_files
    max_files="$(ulimit -Hn)"
    # The host's swap, disk and file limits are shared by every node container.
    cat <<EOF
failSwapOn: false
imageGCHighThresholdPercent: 100
evictionHard:
  nodefs.available: "0%"
  nodefs.inodesFree: "0%"
  imagefs.available: "0%"
EOF
    if [[ "${max_files}" != unlimited ]] && ((max_files < 1000000)); then
      echo "maxOpenFiles: ${max_files}"
    fi
    if cgroup_is_v1; then
      # In cgroupfs notation: the systemd driver turns /kubelet into kubelet.slice,
      # which the node image's entry script prepares in every hierarchy.
      echo "cgroupRoot: /kubelet"
    fi
  fi
}

write_init_config() {
  local config
  config="$(
    cat <<EOF
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: ${MINICLUSTER_CONTROL_PLANE_IP}
  bindPort: 6443
nodeRegistration:
EOF
    kubeadm_node_registration
    cat <<EOF
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
# Explicit, so kubeadm never looks up "stable" on the network.
kubernetesVersion: v${MINICLUSTER_KUBERNETES_VERSION}
controlPlaneEndpoint: ${MINICLUSTER_CONTROL_PLANE_IP}:6443
apiServer:
  certSANs: [${MINICLUSTER_CONTROL_PLANE_IP}]
networking:
  podSubnet: ${MINICLUSTER_POD_CIDR}
  serviceSubnet: ${MINICLUSTER_SERVICE_CIDR}
EOF
    kubelet_configuration
    if minicluster_provider_is_container; then
      # kube-proxy cannot raise the host's nf_conntrack_max from a container.
      cat <<'EOF'
---
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
conntrack:
  maxPerCore: 0
EOF
    fi
  )"
  write_file "${INIT_CONFIG}" 0600 <<<"${config}"
}

# --- kubeadm init, once: a running API server means it is done ---
init_control_plane() {
  if [[ -f "${ADMIN_CONF}" ]]; then
    # After a reboot the static pods take a while to come back.
    wait_for "the API server of an initialised control plane" api_is_ready
    skip "the control plane is initialised and its API server answers"
    return 0
  fi
  if [[ -f /etc/kubernetes/manifests/kube-apiserver.yaml ]]; then
    fatal "a half-finished kubeadm init is present (manifests but no ${ADMIN_CONF}); run \`kubeadm reset --force\` on ${MINICLUSTER_NODE_NAME}, then \`vagrant provision ${MINICLUSTER_NODE_NAME}\`"
  fi
  write_init_config
  info "kubeadm init (Kubernetes v${MINICLUSTER_KUBERNETES_VERSION}, API at ${MINICLUSTER_CONTROL_PLANE_IP}:6443)"
  kubeadm init --config "${INIT_CONFIG}" --skip-token-print
  wait_for "the new API server" api_is_ready
}

# --- the admin kubeconfig, for root, vagrant, the workers and the host ---
export_kubeconfig() {
  local shared="${MINICLUSTER_SHARED_DIR:?}" server="https://${MINICLUSTER_CONTROL_PLANE_IP}:6443" tmp
  install -d -m 0700 /root/.kube
  write_file /root/.kube/config 0600 <"${ADMIN_CONF}"
  if id vagrant >/dev/null 2>&1; then
    install -d -m 0700 -o vagrant -g vagrant /home/vagrant/.kube
    write_file /home/vagrant/.kube/config 0600 <"${ADMIN_CONF}"
    chown vagrant:vagrant /home/vagrant/.kube/config
  fi
  # The shared copy names the private address, which the host and workers reach.
  mkdir -p "${shared}"
  tmp="$(mktemp)"
  cp "${ADMIN_CONF}" "${tmp}"
  kubectl --kubeconfig "${tmp}" config set-cluster kubernetes --server "${server}" >/dev/null
  if cmp -s "${tmp}" "${shared}/kubeconfig"; then
    skip "${shared}/kubeconfig is up to date"
  else
    # Renamed into place, so a worker never reads half a file.
    cp "${tmp}" "${shared}/kubeconfig.new"
    chmod 0600 "${shared}/kubeconfig.new" ||
      warn "the shared folder ignores file modes; the Vagrantfile sets 0600 on the host side"
    mv -f "${shared}/kubeconfig.new" "${shared}/kubeconfig"
    info "kubeconfig for the host: .minicluster/kubeconfig (server ${server})"
  fi
  rm -f "${tmp}"
}

# --- a single-node cluster runs its pods on the control plane ---
allow_workloads_without_workers() {
  if ((${MINICLUSTER_WORKER_COUNT:-0} > 0)); then
    skip "${MINICLUSTER_WORKER_COUNT} workers take the workloads; the control plane stays tainted"
    return 0
  fi
  if kubectl_admin get node "${MINICLUSTER_NODE_NAME}" -o jsonpath='{.spec.taints}' | grep -q node-role.kubernetes.io/control-plane; then
    kubectl_admin taint node "${MINICLUSTER_NODE_NAME}" node-role.kubernetes.io/control-plane:NoSchedule-
    info "no workers: removed the control plane's NoSchedule taint"
  else
    skip "the control plane takes workloads already"
  fi
}

# --- Flannel from this project's manifest ---
# shellcheck disable=SC2034 # render_template reads the placeholders' variables by name
install_flannel() {
  local POD_CIDR="${MINICLUSTER_POD_CIDR}" FLANNEL_IMAGE FLANNEL_CNI_PLUGIN_IMAGE manifest
  FLANNEL_IMAGE="$(image_ref flannel)"
  FLANNEL_CNI_PLUGIN_IMAGE="$(image_ref flannel-cni-plugin)"
  manifest="$(render_template "${FLANNEL_TEMPLATE}" POD_CIDR FLANNEL_IMAGE FLANNEL_CNI_PLUGIN_IMAGE)"
  write_file "${KUBEADM_CONFIG_DIR}/flannel.yaml" 0644 <<<"${manifest}"
  # apply is idempotent; it reports "unchanged" for a second run.
  kubectl_admin apply -f "${KUBEADM_CONFIG_DIR}/flannel.yaml"
  kubectl_admin -n kube-flannel rollout status daemonset/kube-flannel-ds --timeout="${MINICLUSTER_WAIT_TIMEOUT_S}s"
}

node_is_ready() {
  local ready
  ready="$(kubectl_admin get node "${MINICLUSTER_NODE_NAME}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')"
  echo "Ready=${ready}"
  [[ "${ready}" == True ]]
}

main() {
  require_env MINICLUSTER_NODE_NAME MINICLUSTER_NODE_IP MINICLUSTER_CONTROL_PLANE_IP \
    MINICLUSTER_POD_CIDR MINICLUSTER_SERVICE_CIDR MINICLUSTER_KUBERNETES_VERSION MINICLUSTER_SHARED_DIR
  init_control_plane
  export_kubeconfig
  allow_workloads_without_workers
  install_flannel
  wait_for "node ${MINICLUSTER_NODE_NAME} to be Ready" node_is_ready
  info "control plane ${MINICLUSTER_NODE_NAME} is Ready"
}

# Sourcing the file (as the unit tests do) defines the steps without running them.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
