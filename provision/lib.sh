# shellcheck shell=bash
# Shared by every provisioner: logging, guards, retries, and the two seams.
#
#   The provider seam: MINICLUSTER_PROVIDER names the provider; the few steps that
#   belong to the host kernel (swap, kernel modules) ask
#   minicluster_provider_is_container and log "not applicable under docker".
#   The artifact seam: artifact_source says where packages, binaries and images
#   come from, "bundle" (MINICLUSTER_BUNDLE_DIR holds a manifest) or "upstream"
#   (pkgs.k8s.io and the distribution's apt repositories, registries for images).
#
# Every MINICLUSTER_* variable comes from the Vagrantfile (harness.settings); a
# provisioner run by hand needs the same ones. Tunables, with their defaults:
#   MINICLUSTER_WAIT_TIMEOUT_S   longest wait for the API, a node, a mount (900)
#   MINICLUSTER_PROVISION_DIR    where lib.sh, bundle.sh and manifests/ live
#   MINICLUSTER_KUBEADM_CONFIG_DIR  the kubeadm and manifest files written
#                                (/etc/kubernetes/minicluster)

# Constants and FILE_CHANGED are read by the scripts that source this file.
# shellcheck disable=SC2034

MINICLUSTER_WAIT_TIMEOUT_S="${MINICLUSTER_WAIT_TIMEOUT_S:-900}"
MINICLUSTER_PROVISION_DIR="${MINICLUSTER_PROVISION_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
MINICLUSTER_STEP="${MINICLUSTER_STEP:-$(basename "$0" .sh)}"
KUBEADM_CONFIG_DIR="${MINICLUSTER_KUBEADM_CONFIG_DIR:-/etc/kubernetes/minicluster}"
CONTAINERD_SOCKET=unix:///run/containerd/containerd.sock
export DEBIAN_FRONTEND=noninteractive

# --- logging: +++ for progress, !!! on stderr for trouble ---
info() { echo "+++ [${MINICLUSTER_STEP}] $*"; }
warn() { echo "!!! [${MINICLUSTER_STEP}] warning: $*" >&2; }
fatal() {
  echo "!!! [${MINICLUSTER_STEP}] error: $*" >&2
  exit 1
}
# Every guard that skips a step says so, and why.
skip() { info "skipping: $*"; }

# The provisioner's inputs must all be set; name the missing ones at once.
require_env() {
  local name missing=()
  for name in "$@"; do
    [[ -n "${!name:-}" ]] || missing+=("${name}")
  done
  ((${#missing[@]} == 0)) || fatal "not set: ${missing[*]}; the Vagrantfile passes them from cluster.yaml"
}

# --- retries: report each failed try, give up with the last output ---
# retry TRIES DELAY_S WHAT COMMAND...
retry() {
  local tries="$1" delay="$2" what="$3" i out=""
  shift 3
  for ((i = 1; i <= tries; i++)); do
    if out="$("$@" 2>&1)"; then
      return 0
    fi
    info "on try ${i}/${tries}, ${what}: ${out##*$'\n'}"
    if ((i < tries)); then
      sleep "${delay}"
    fi
  done
  fatal "timed out waiting for ${what}; tried ${tries} times, ${delay} s apart; last output: ${out}"
}

# wait_for WHAT COMMAND...: retry every 5 s up to MINICLUSTER_WAIT_TIMEOUT_S.
wait_for() {
  local what="$1"
  shift
  retry "$((MINICLUSTER_WAIT_TIMEOUT_S / 5))" 5 "${what}" "$@"
}

# --- files: write only when the content changes; FILE_CHANGED tells which ---
FILE_CHANGED=false
# write_file PATH MODE < content
# Feed it by redirection, never through a pipe: a pipe runs it in a subshell,
# which would lose FILE_CHANGED.
write_file() {
  local path="$1" mode="$2" tmp
  tmp="$(mktemp)"
  cat >"${tmp}"
  if [[ -f "${path}" ]] && cmp -s "${tmp}" "${path}"; then
    rm -f "${tmp}"
    FILE_CHANGED=false
    info "${path} is up to date"
    return 0
  fi
  install -D -m "${mode}" "${tmp}" "${path}"
  rm -f "${tmp}"
  FILE_CHANGED=true
  info "wrote ${path}"
}

# Replace ${NAME} in a template with the variables named after it.
# render_template FILE NAME...
render_template() {
  local file="$1" text name
  shift
  text="$(<"${file}")"
  for name in "$@"; do
    text="${text//\$\{${name}\}/${!name}}"
  done
  # shellcheck disable=SC2016 # a literal ${, the start of a placeholder
  if [[ "${text}" == *'${'* ]]; then
    fatal "${file} still has a placeholder after rendering: $(grep -o '\${[A-Z_]*}' <<<"${text}" | sort -u | tr '\n' ' ')"
  fi
  printf '%s\n' "${text}"
}

# --- the provider seam ---
minicluster_provider() { echo "${MINICLUSTER_PROVIDER:?MINICLUSTER_PROVIDER is not set}"; }
minicluster_provider_is_container() { [[ "$(minicluster_provider)" == docker ]]; }
not_applicable_in_container() { info "$*: not applicable under docker (it belongs to the host kernel)"; }

# The host's cgroup layout: v1 hosts need kubelet's failCgroupV1 override.
cgroup_is_v1() { [[ "$(stat -f -c %T /sys/fs/cgroup)" != cgroup2fs ]]; }

# Whether this process holds a capability (by number, see capabilities(7)).
has_capability() {
  local caps
  caps="$(awk '/^CapEff:/ { print $2 }' /proc/self/status)"
  (((16#${caps} >> $1) & 1))
}
CAP_SYS_RESOURCE=24

# --- capability detection: the kernel offers a file system, or can load it ---
kernel_has_filesystem() {
  local fs="$1" module="${2:-$1}"
  grep -qw "${fs}" /proc/filesystems && return 0
  if ! minicluster_provider_is_container && command -v modprobe >/dev/null; then
    modprobe "${module}" 2>/dev/null || true # absent module: answered below
  fi
  grep -qw "${fs}" /proc/filesystems
}

# The interface holding this node's private address (names differ per box).
private_interface() {
  local iface
  iface="$(ip -o -4 addr show | awk -v ip="${MINICLUSTER_NODE_IP:?}" '{ split($4, a, "/") } a[1] == ip { print $2; exit }')"
  [[ -n "${iface}" ]] || fatal "no interface holds ${MINICLUSTER_NODE_IP}; is the private network up? (ip -4 addr)"
  echo "${iface}"
}

# --- the artifact seam ---
artifact_source() {
  if [[ -n "${MINICLUSTER_BUNDLE_DIR:-}" && -f "${MINICLUSTER_BUNDLE_DIR}/manifest.json" ]]; then
    echo bundle
  else
    echo upstream
  fi
}

# image_ref NAME: the reference of one of the images MiniCluster runs.
image_ref() {
  local name="$1"
  if [[ "$(artifact_source)" == bundle ]]; then
    bundle_image_ref "${MINICLUSTER_BUNDLE_DIR}" "${name}"
    return 0
  fi
  case "${name}" in
    flannel) echo "ghcr.io/flannel-io/flannel:${MINICLUSTER_FLANNEL_VERSION:?}" ;;
    flannel-cni-plugin) echo "ghcr.io/flannel-io/flannel-cni-plugin:${MINICLUSTER_FLANNEL_CNI_PLUGIN_VERSION:?}" ;;
    nginx) echo "${MINICLUSTER_NGINX_IMAGE:?}" ;;
    pause)
      # kubeadm knows which pause image its release expects.
      kubeadm config images list --kubernetes-version "v${MINICLUSTER_KUBERNETES_VERSION:?}" 2>/dev/null | grep '/pause:' ||
        fatal "kubeadm config images list printed no pause image"
      ;;
    *) fatal "no upstream image called ${name}" ;;
  esac
}

# --- apt, for the upstream artifacts ---
APT_UPDATED=false
apt_update() {
  if [[ "${APT_UPDATED}" == true ]]; then
    return 0
  fi
  retry 3 10 "apt-get update" apt-get update -q
  APT_UPDATED=true
}

# apt_install PACKAGE[=VERSION]...: install what is missing or at another version.
apt_install() {
  local spec name version installed wanted=()
  for spec in "$@"; do
    name="${spec%%=*}"
    version=""
    [[ "${spec}" == *=* ]] && version="${spec#*=}"
    # dpkg-query fails for a package it has never seen: that is "not installed".
    installed="$(dpkg-query -W -f='${db:Status-Status} ${Version}' "${name}" 2>/dev/null || true)"
    if [[ "${installed}" == "installed "* && (-z "${version}" || "${installed#installed }" == "${version}") ]]; then
      info "${name} ${installed#installed } is installed"
    else
      wanted+=("${spec}")
    fi
  done
  ((${#wanted[@]} > 0)) || return 0
  apt_update
  info "installing ${wanted[*]}"
  retry 3 10 "apt-get install ${wanted[*]}" \
    apt-get install -y -q --no-install-recommends --allow-change-held-packages --allow-downgrades "${wanted[@]}"
}

# apt_version NAME PATTERN: the newest version of NAME in the repositories that
# matches the glob PATTERN (such as 2.2.1-*~24.04.*).
apt_version() {
  local name="$1" pattern="$2" version
  apt_update
  while read -r version; do
    # shellcheck disable=SC2053 # the pattern is a glob on purpose
    if [[ "${version}" == ${pattern} ]]; then
      echo "${version}"
      return 0
    fi
  done < <(apt-cache madison "${name}" | awk -F'|' '{ gsub(/ /, "", $2); print $2 }')
  fatal "no ${name} version matching ${pattern} in the apt repositories: $(apt-cache madison "${name}" | awk -F'|' '{ print $2 }' | tr -s ' \n' ' '); set containerd.version in cluster.yaml to one of them"
}

# apt_hold PACKAGE...: keep unattended upgrades away from the pinned versions.
apt_hold() {
  local held
  held="$(apt-mark showhold)"
  local name
  for name in "$@"; do
    if grep -qx "${name}" <<<"${held}"; then
      info "${name} is already held"
    else
      apt-mark hold "${name}" >/dev/null
      info "held ${name} at its version"
    fi
  done
}

# --- Kubernetes access ---
# The admin kubeconfig this node can use: the control plane's own, or the one it
# exported to the shared folder for the workers and the host.
admin_kubeconfig() {
  if [[ -f /etc/kubernetes/admin.conf ]]; then
    echo /etc/kubernetes/admin.conf
  else
    echo "${MINICLUSTER_SHARED_DIR:?}/kubeconfig"
  fi
}
kubectl_admin() { kubectl --kubeconfig "$(admin_kubeconfig)" "$@"; }
api_is_ready() { kubectl_admin get --raw /readyz >/dev/null; }

# The kubeadm settings a node needs besides the cluster's: node IP and the
# preflight checks that cannot pass in a container or on cgroup v1.
kubeadm_node_registration() {
  local ignore=()
  if minicluster_provider_is_container; then
    # The host's swap and kernel configuration are not the node's to change.
    ignore+=(Swap SystemVerification)
    [[ "$(cat /proc/sys/net/ipv4/ip_forward)" == 1 ]] || ignore+=(FileContent--proc-sys-net-ipv4-ip_forward)
  elif cgroup_is_v1; then
    ignore+=(SystemVerification) # kubeadm refuses cgroup v1 from 1.35 on
  fi
  cat <<EOF
  name: ${MINICLUSTER_NODE_NAME:?}
  criSocket: ${CONTAINERD_SOCKET}
  kubeletExtraArgs:
    # The private address, never the NAT adapter's (10.0.2.15 on VirtualBox).
    - name: node-ip
      value: "${MINICLUSTER_NODE_IP:?}"
EOF
  if ((${#ignore[@]} > 0)); then
    echo "  ignorePreflightErrors:"
    printf '    - %s\n' "${ignore[@]}"
  fi
}

# The provisioners' own scripts and the offline bundle's functions.
if [[ -f "${MINICLUSTER_PROVISION_DIR}/bundle.sh" ]]; then
  # shellcheck source=provision/bundle.sh
  source "${MINICLUSTER_PROVISION_DIR}/bundle.sh"
fi
