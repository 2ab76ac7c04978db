#!/usr/bin/env bash
# Prepares a Debian or Ubuntu host to run MiniCluster's whole test suite:
# installs the packages the suites use and starts the daemons they talk to.
#
# Safe to run again: installed packages and running daemons are left alone.
# Needs root (apt-get, dockerd, libvirtd). Environment knobs:
#   MINICLUSTER_SKIP_APT=1   do not call apt-get (packages managed elsewhere)
set -o errexit -o nounset -o pipefail

readonly PACKAGES=(
  # Vagrant and its providers used by the suites: docker and libvirt (QEMU emulation)
  vagrant docker.io vagrant-libvirt libvirt-daemon-system qemu-system-x86 qemu-utils
  dnsmasq-base
  # lint
  shellcheck
  # integration hosts: OpenSSH servers and nginx in network namespaces
  openssh-server nginx-light iproute2
  # node image, VM box and bundle builds
  debootstrap rsync gcc libc6-dev
)

info() { echo "+++ $(date -u +%T) $*"; }
fatal() { echo "!!! $*" >&2; exit 1; }

require_root() {
  if [[ "${EUID}" -ne 0 ]]; then
    fatal "run as root (sudo $0): it installs packages and starts dockerd and libvirtd"
  fi
}

install_packages() {
  if [[ "${MINICLUSTER_SKIP_APT:-0}" == 1 ]]; then
    info "MINICLUSTER_SKIP_APT=1: not installing packages"
    return 0
  fi
  local missing=() pkg
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("${pkg}")
  done
  if [[ "${#missing[@]}" -eq 0 ]]; then
    info "all ${#PACKAGES[@]} host packages already installed"
    return 0
  fi
  info "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

main() {
  require_root
  install_packages
}

main "$@"
