#!/usr/bin/env bash
# Every node: swap off, kernel modules and sysctls for good, containerd with the
# systemd cgroup driver, kubeadm/kubelet/kubectl at the pinned version, and the
# kubelet bound to the private address. Safe to run again: each step checks first.
#
# Environment (from the Vagrantfile): MINICLUSTER_PROVIDER, MINICLUSTER_NODE_IP,
# MINICLUSTER_KUBERNETES_VERSION, MINICLUSTER_KUBERNETES_PACKAGE_REVISION,
# MINICLUSTER_CONTAINERD_VERSION, MINICLUSTER_BUNDLE_DIR ("" = upstream).
set -o errexit -o nounset -o pipefail

# Vagrant uploads this file alone (as /tmp/vagrant-shell); its library stays in
# the synced folder. The step name labels the log lines.
MINICLUSTER_STEP="node"
MINICLUSTER_PROVISION_DIR="${MINICLUSTER_PROVISION_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
[[ -f "${MINICLUSTER_PROVISION_DIR}/lib.sh" ]] || MINICLUSTER_PROVISION_DIR=/vagrant/provision
# shellcheck source=provision/lib.sh
source "${MINICLUSTER_PROVISION_DIR}/lib.sh"

MODULES=(overlay br_netfilter)
# kube-proxy and Flannel route pod traffic through the bridge and iptables.
SYSCTLS=(
  net.ipv4.ip_forward=1
  net.bridge.bridge-nf-call-iptables=1
  net.bridge.bridge-nf-call-ip6tables=1
)
SWAPOFF_UNIT=/etc/systemd/system/minicluster-swapoff.service

# --- swap off now, at every boot, and out of fstab: kubelet refuses swap ---
disable_swap() {
  if minicluster_provider_is_container; then
    not_applicable_in_container "swap"
    return 0
  fi
  if [[ -n "$(swapon --noheadings --show)" ]]; then
    swapoff -a
    info "swap turned off"
  else
    skip "no swap is active"
  fi
  if grep -Eq '^[^#].*[[:space:]]swap[[:space:]]' /etc/fstab; then
    sed -i -E 's|^([^#].*[[:space:]]swap[[:space:]].*)$|# \1  # swap off for kubelet (MiniCluster)|' /etc/fstab
    info "commented the swap entries of /etc/fstab"
  else
    skip "/etc/fstab has no active swap entry"
  fi
  # A unit as well, for swap that does not come from fstab (a swap partition
  # found by systemd's GPT generator, a swap file added later).
  write_file "${SWAPOFF_UNIT}" 0644 <<'EOF'
[Unit]
Description=Keep swap off for kubelet (MiniCluster)
DefaultDependencies=no
After=swap.target
Before=kubelet.service

[Service]
Type=oneshot
ExecStart=/sbin/swapoff -a

[Install]
WantedBy=multi-user.target
EOF
  if [[ "${FILE_CHANGED}" == true ]]; then
    systemctl daemon-reload
  fi
  systemctl enable --quiet minicluster-swapoff.service
}

# --- overlay (containerd's snapshotter) and br_netfilter, now and at boot ---
load_kernel_modules() {
  local module
  if minicluster_provider_is_container; then
    not_applicable_in_container "loading kernel modules"
    for module in "${MODULES[@]}"; do
      if [[ -d "/sys/module/${module}" ]] || grep -qw "^${module}" /proc/modules; then
        info "the host kernel has ${module}"
      else
        warn "the host kernel has no ${module} loaded; run \`modprobe ${module}\` on the Docker host"
      fi
    done
    return 0
  fi
  write_file /etc/modules-load.d/minicluster.conf 0644 < <(printf '%s\n' "${MODULES[@]}")
  for module in "${MODULES[@]}"; do
    if [[ -d "/sys/module/${module}" ]]; then
      skip "${module} is loaded"
    else
      modprobe "${module}"
      info "loaded ${module}"
    fi
  done
}

# --- the sysctls, in /etc/sysctl.d so they survive a reboot ---
set_sysctls() {
  local setting key value failed=()
  write_file /etc/sysctl.d/90-minicluster.conf 0644 < <(printf '%s\n' "${SYSCTLS[@]}")
  if ! minicluster_provider_is_container; then
    sysctl --quiet --load=/etc/sysctl.d/90-minicluster.conf
    info "applied ${SYSCTLS[*]}"
    return 0
  fi
  # In a container some keys belong to the host: apply what is writable.
  for setting in "${SYSCTLS[@]}"; do
    key="${setting%%=*}"
    value="${setting#*=}"
    if [[ "$(sysctl -n "${key}" 2>/dev/null)" == "${value}" ]]; then
      info "${key} is ${value}"
    elif sysctl -q -w "${setting}" 2>/dev/null; then
      info "set ${setting}"
    else
      failed+=("${setting}")
    fi
  done
  if ((${#failed[@]} > 0)); then
    warn "cannot set ${failed[*]} from inside the container; set them on the Docker host"
  fi
}

# --- containerd at the pinned version ---
install_containerd() {
  local found release
  if command -v containerd >/dev/null && { minicluster_provider_is_container || [[ "$(artifact_source)" == bundle ]]; }; then
    # The node image (or an air-gapped box) brings containerd; report what it is.
    found="$(containerd --version | awk '{ print $3 }')"
    found="${found#v}"
    if [[ "${found}" == "${MINICLUSTER_CONTAINERD_VERSION%%-*}"* ]]; then
      info "containerd ${found} is installed, as cluster.yaml pins"
    else
      warn "containerd ${found} is installed; cluster.yaml pins ${MINICLUSTER_CONTAINERD_VERSION} (the node image decides under docker)"
    fi
    return 0
  fi
  require_env MINICLUSTER_CONTAINERD_VERSION
  # An upstream version (2.2.1) takes this release's Ubuntu build of it.
  local version="${MINICLUSTER_CONTAINERD_VERSION}"
  if [[ "${version}" != *-* ]]; then
    release="$(. /etc/os-release && echo "${VERSION_ID}")"
    version="$(apt_version containerd "${version}-*~${release}.*")"
  fi
  apt_install "containerd=${version}"
  apt_hold containerd
}

# --- kubeadm, kubelet and kubectl at the exact version, held ---
install_kubernetes() {
  require_env MINICLUSTER_KUBERNETES_VERSION MINICLUSTER_KUBERNETES_PACKAGE_REVISION
  if [[ "$(artifact_source)" == bundle ]]; then
    info "installing Kubernetes ${MINICLUSTER_KUBERNETES_VERSION} from the bundle at ${MINICLUSTER_BUNDLE_DIR}"
    bundle_verify "${MINICLUSTER_BUNDLE_DIR}"
    bundle_install_kubernetes "${MINICLUSTER_BUNDLE_DIR}"
    bundle_install_cni "${MINICLUSTER_BUNDLE_DIR}"
    return 0
  fi
  add_kubernetes_repository
  local version="${MINICLUSTER_KUBERNETES_VERSION}-${MINICLUSTER_KUBERNETES_PACKAGE_REVISION}"
  apt_install "kubelet=${version}" "kubeadm=${version}" "kubectl=${version}"
  apt_hold kubelet kubeadm kubectl
}

# pkgs.k8s.io has one repository per minor release (the legacy apt.kubernetes.io
# is gone); its key signs them all.
add_kubernetes_repository() {
  local minor="${MINICLUSTER_KUBERNETES_VERSION%.*}"
  local url="https://pkgs.k8s.io/core:/stable:/v${minor}/deb/"
  local keyring=/etc/apt/keyrings/kubernetes-apt-keyring.gpg
  apt_install ca-certificates curl gpg
  if [[ -s "${keyring}" ]]; then
    skip "${keyring} exists"
  else
    install -d -m 0755 /etc/apt/keyrings
    retry 3 10 "the pkgs.k8s.io signing key" \
      bash -c "curl -fsSL '${url}Release.key' | gpg --batch --yes --dearmor -o '${keyring}'"
    info "added the pkgs.k8s.io signing key"
  fi
  write_file /etc/apt/sources.list.d/kubernetes.list 0644 <<<"deb [signed-by=${keyring}] ${url} /"
  if [[ "${FILE_CHANGED}" == true ]]; then
    APT_UPDATED=false
  fi
}

# --- containerd: systemd cgroups (as kubelet) and kubeadm's pause image ---
# edit_containerd_config PAUSE_IMAGE RESTRICT_OOM < default config > config
edit_containerd_config() {
  local pause="$1" restrict_oom="$2"
  # One edit serves both config formats: 1.x (sandbox_image) and 2.x (the
  # pinned "sandbox" image); a mismatched pause image makes containerd pull it.
  sed -E \
    -e 's/^([[:space:]]*SystemdCgroup[[:space:]]*=).*/\1 true/' \
    -e "s|^([[:space:]]*sandbox_image[[:space:]]*=).*|\1 \"${pause}\"|" \
    -e "s|^([[:space:]]*sandbox[[:space:]]*=).*|\1 '${pause}'|" \
    -e "s/^([[:space:]]*restrict_oom_score_adj[[:space:]]*=).*/\1 ${restrict_oom}/"
}

configure_containerd() {
  local pause config restrict_oom=false
  pause="$(image_ref pause)"
  if minicluster_provider_is_container && ! has_capability "${CAP_SYS_RESOURCE}"; then
    # Without CAP_SYS_RESOURCE no process may lower its OOM score.
    restrict_oom=true
  fi
  config="$(containerd config default | edit_containerd_config "${pause}" "${restrict_oom}")"
  grep -q 'SystemdCgroup = true' <<<"${config}" ||
    fatal "containerd's default config has no SystemdCgroup option to set; check \`containerd config default\`"
  write_file /etc/containerd/config.toml 0644 <<<"${config}"
  if [[ "${FILE_CHANGED}" == true ]] || ! systemctl is-active --quiet containerd; then
    systemctl enable --quiet containerd
    systemctl restart containerd
    info "containerd restarted with SystemdCgroup = true and sandbox image ${pause}"
  fi
  wait_for "containerd to answer" ctr --address /run/containerd/containerd.sock version
}

# --- the images of an offline bundle, into containerd's CRI namespace ---
import_images() {
  if [[ "$(artifact_source)" != bundle ]]; then
    skip "images come from their registries (no bundle)"
    return 0
  fi
  bundle_import_images "${MINICLUSTER_BUNDLE_DIR}"
}

# --- kubelet: the private address, before kubeadm writes its own flags ---
configure_kubelet() {
  require_env MINICLUSTER_NODE_IP
  private_interface >/dev/null # fail early when the private network is missing
  # The packaged and the bundle's kubelet units both read /etc/default/kubelet.
  write_file /etc/default/kubelet 0644 <<<"KUBELET_EXTRA_ARGS=--node-ip=${MINICLUSTER_NODE_IP}"
  systemctl enable --quiet kubelet
  if [[ "${FILE_CHANGED}" == true ]] && [[ -f /var/lib/kubelet/config.yaml ]]; then
    systemctl restart kubelet
    info "kubelet restarted with --node-ip=${MINICLUSTER_NODE_IP}"
  fi
}

main() {
  require_env MINICLUSTER_PROVIDER MINICLUSTER_NODE_NAME
  info "node ${MINICLUSTER_NODE_NAME} (${MINICLUSTER_PROVIDER}, artifacts from $(artifact_source))"
  disable_swap
  load_kernel_modules
  set_sysctls
  install_containerd
  install_kubernetes
  configure_containerd
  import_images
  configure_kubelet
  info "node ${MINICLUSTER_NODE_NAME} is ready for kubeadm"
}

# Sourcing the file (as the unit tests do) defines the steps without running them.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
