# shellcheck shell=bash
# Offline bundle consumer: installs Kubernetes, the CNI plugins and the images of a
# bundle made by `minicluster bundle build`, so that a node reaches no network.
#
# Sourced by provision/lib.sh (which sets errexit, nounset and pipefail and defines
# info, warn and fatal). Every function takes the bundle's version directory, the
# one holding manifest.json and SHA256SUMS, e.g. /minicluster/bundle/v1.36.3.
#
# Tunables (defaults from the environment):
#   BUNDLE_INSTALL_ROOT   prefix of every installed path ("" = this system)
#   BUNDLE_CTR            the containerd client (ctr; it honours CONTAINERD_ADDRESS)
#   BUNDLE_NAMESPACE      containerd namespace of the CRI plugin (k8s.io)

BUNDLE_INSTALL_ROOT="${BUNDLE_INSTALL_ROOT:-}"
BUNDLE_CTR="${BUNDLE_CTR:-ctr}"
BUNDLE_NAMESPACE="${BUNDLE_NAMESPACE:-k8s.io}"
BUNDLE_PIN_LABEL="io.cri-containerd.pinned=pinned" # kubelet's image GC keeps these
BUNDLE_VERIFIED="" # the directory bundle_verify last passed, for this shell

# lib.sh defines these; the fallbacks let this file run on its own (and in tests).
if ! declare -F info >/dev/null; then
  info() { echo "+++ [bundle] $*"; }
fi
if ! declare -F warn >/dev/null; then
  warn() { echo "!!! [bundle] warning: $*" >&2; }
fi
if ! declare -F fatal >/dev/null; then
  fatal() {
    echo "!!! [bundle] error: $*" >&2
    exit 1
  }
fi

# --- verify every file against SHA256SUMS before anything is installed ---
bundle_verify() {
  local dir="$1" sums="$1/SHA256SUMS" expected path actual count=0
  [[ -f "${dir}/manifest.json" ]] || fatal "no bundle at ${dir}: manifest.json is missing; run \`minicluster bundle build\` and point bundle.path at its output"
  [[ -f "${sums}" ]] || fatal "bundle ${dir} has no SHA256SUMS; rebuild it with \`minicluster bundle build\`"
  while read -r expected path; do
    [[ -n "${expected}" ]] || continue
    case "${path}" in
      /* | *..*) fatal "SHA256SUMS of ${dir} names ${path}, outside the bundle; the bundle is not trustworthy" ;;
    esac
    [[ -f "${dir}/${path}" ]] || fatal "bundle file ${path} is missing from ${dir} (listed in SHA256SUMS); copy the whole bundle again"
    actual="$(sha256sum "${dir}/${path}")"
    actual="${actual%% *}"
    if [[ "${actual}" != "${expected}" ]]; then
      fatal "bundle file ${path} is corrupt: SHA256SUMS says ${expected}, the file has ${actual}; nothing was installed; copy or rebuild the bundle"
    fi
    count=$((count + 1))
  done <"${sums}"
  ((count > 0)) || fatal "SHA256SUMS of ${dir} lists no file"
  BUNDLE_VERIFIED="${dir}"
  info "bundle ${dir}: ${count} files match SHA256SUMS"
}

bundle_require_verified() {
  [[ "${BUNDLE_VERIFIED}" == "$1" ]] || bundle_verify "$1"
}

# --- read the manifest (written by the producer: two-space indent, a key a line) ---
bundle_manifest_value() {
  local dir="$1" key="$2" value
  value="$(awk -v key="\"${key}\":" '$1 == key && /^  "/ { gsub(/[",]/, "", $2); print $2; exit }' "${dir}/manifest.json")"
  [[ -n "${value}" ]] || fatal "manifest.json of ${dir} has no ${key}"
  printf '%s\n' "${value}"
}

# Prints the image reference of NAME (pause, etcd, coredns, flannel, nginx, ...).
bundle_image_ref() {
  local dir="$1" name="$2" ref
  ref="$(awk -v key="\"${name}\":" '
    /^  "images": \{/ { inside = 1; next }
    inside && /^  }/ { exit }
    inside && $1 == key { gsub(/[",]/, "", $2); print $2; exit }' "${dir}/manifest.json")"
  [[ -n "${ref}" ]] || fatal "bundle ${dir} has no image called ${name}; its manifest.json lists: $(bundle_image_names "${dir}" | tr '\n' ' ')"
  printf '%s\n' "${ref}"
}

bundle_image_names() {
  awk '/^  "images": \{/ { inside = 1; next }
    inside && /^  }/ { exit }
    inside { gsub(/[":]/, "", $1); print $1 }' "$1/manifest.json"
}

# --- install a file only when it differs, and say which ---
bundle_install_file() {
  local source="$1" target="$2" mode="$3"
  if [[ -f "${target}" ]] && cmp -s "${source}" "${target}"; then
    info "${target} is already the bundle's; skipping"
    return 0
  fi
  install -D -m "${mode}" "${source}" "${target}"
  info "installed ${target}"
}

# --- kubeadm, kubelet, kubectl and kubelet's systemd unit ---
bundle_install_kubernetes() {
  local dir="$1" command unit_dir
  bundle_require_verified "${dir}"
  for command in kubeadm kubelet kubectl; do
    bundle_install_file "${dir}/bin/${command}" "${BUNDLE_INSTALL_ROOT}/usr/local/bin/${command}" 0755
  done
  unit_dir="${BUNDLE_INSTALL_ROOT}/etc/systemd/system"
  bundle_write_unit "${unit_dir}/kubelet.service" bundle_kubelet_unit
  bundle_write_unit "${unit_dir}/kubelet.service.d/10-kubeadm.conf" bundle_kubeadm_dropin
  if [[ -z "${BUNDLE_INSTALL_ROOT}" ]] && command -v systemctl >/dev/null; then
    systemctl daemon-reload
    systemctl enable kubelet.service
  fi
}

BUNDLE_UNIT_MARK="# Written by MiniCluster's bundle installer."

# Writes the output of GENERATOR to PATH, unless PATH exists and is not ours.
bundle_write_unit() {
  local path="$1" generator="$2"
  if [[ -f "${path}" ]] && ! grep -qxF "${BUNDLE_UNIT_MARK}" "${path}"; then
    info "keeping ${path}, which the node image provides"
    return 0
  fi
  mkdir -p "$(dirname "${path}")"
  "${generator}" >"${path}"
  info "wrote ${path}"
}

bundle_kubelet_unit() {
  cat <<EOF
${BUNDLE_UNIT_MARK}
[Unit]
Description=kubelet, the Kubernetes node agent
Documentation=https://kubernetes.io/docs/reference/command-line-tools-reference/kubelet/
Wants=network-online.target
After=network-online.target containerd.service

[Service]
ExecStart=/usr/local/bin/kubelet
# kubelet exits until kubeadm has written its configuration; keep trying.
Restart=always
RestartSec=5
StartLimitInterval=0

[Install]
WantedBy=multi-user.target
EOF
}

# The flags kubeadm expects kubelet to get: its kubeconfigs, the config file it
# writes, and the per-node flags of kubeadm-flags.env and /etc/default/kubelet.
bundle_kubeadm_dropin() {
  cat <<'EOF'
# Written by MiniCluster's bundle installer.
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/local/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
EOF
}

# --- CNI plugins (bridge, host-local, loopback, portmap, flannel, ...) ---
bundle_install_cni() {
  local dir="$1" plugin
  bundle_require_verified "${dir}"
  for plugin in "${dir}"/cni/bin/*; do
    bundle_install_file "${plugin}" "${BUNDLE_INSTALL_ROOT}/opt/cni/bin/${plugin##*/}" 0755
  done
}

# --- images into containerd's CRI namespace, pinned against kubelet's GC ---
bundle_import_images() {
  local dir="$1" archive name ref
  bundle_require_verified "${dir}"
  command -v "${BUNDLE_CTR}" >/dev/null || fatal "${BUNDLE_CTR} not found; install containerd before importing the bundle's images"
  for archive in "${dir}"/images/*.tar; do
    name="$(basename "${archive}" .tar)"
    ref="$(bundle_image_ref "${dir}" "${name}")"
    info "importing ${ref} from images/${name}.tar"
    "${BUNDLE_CTR}" -n "${BUNDLE_NAMESPACE}" images import "${archive}" >/dev/null ||
      fatal "${BUNDLE_CTR} could not import images/${name}.tar; is containerd running (\`${BUNDLE_CTR} version\`)?"
    "${BUNDLE_CTR}" -n "${BUNDLE_NAMESPACE}" images label "${ref}" "${BUNDLE_PIN_LABEL}" >/dev/null ||
      fatal "images/${name}.tar imported, but no image ${ref} appeared; the archive and manifest.json disagree"
  done
}
