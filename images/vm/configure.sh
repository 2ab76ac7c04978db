#!/usr/bin/env bash
# Turn a freshly debootstrapped root file system into a bootable Vagrant box.
#
# Runs inside the chroot of the box's disk, after the files of images/vm/rootfs
# were copied in. Environment (set by harness/vmimage.py):
#   BOX_DISK        the whole disk (a loop device), where GRUB goes
#   BOX_ROOT_UUID   the UUID of the root file system
#   BOX_VAGRANT_KEY a file holding Vagrant's insecure public key
set -o errexit -o nounset -o pipefail

BOX_DISK="${BOX_DISK:?}"
BOX_ROOT_UUID="${BOX_ROOT_UUID:?}"
BOX_VAGRANT_KEY="${BOX_VAGRANT_KEY:?}"

info() { echo "[box] $*"; }

write_fstab() {
  info "root file system UUID=${BOX_ROOT_UUID}"
  echo "UUID=${BOX_ROOT_UUID} / ext4 errors=remount-ro 0 1" >/etc/fstab
  echo minicluster >/etc/hostname
  printf '127.0.0.1 localhost\n127.0.1.1 minicluster\n' >/etc/hosts
}

add_vagrant_user() {
  info "adding the vagrant user with Vagrant's insecure key"
  useradd --create-home --shell /bin/bash vagrant
  # Vagrant's box convention; SSH logins take the key only.
  echo vagrant:vagrant | chpasswd
  install -d -m 0700 -o vagrant -g vagrant /home/vagrant/.ssh
  install -m 0600 -o vagrant -g vagrant "${BOX_VAGRANT_KEY}" \
    /home/vagrant/.ssh/authorized_keys
  chmod 0440 /etc/sudoers.d/vagrant
  visudo -c -f /etc/sudoers.d/vagrant
}

enable_services() {
  info "enabling systemd-networkd, sshd and the first-boot host keys"
  systemctl set-default multi-user.target
  systemctl enable systemd-networkd.service ssh.service ssh-host-keys.service
  # Installing nfs-kernel-server enabled it; provision/nfs-server.sh enables it
  # on the one node that serves the share, the others never run it.
  systemctl disable nfs-server.service
  # Housekeeping timers of long-lived machines: under emulation they only slow
  # boot, and the VMs reach no mirror to update from.
  systemctl mask e2scrub_reap.service e2scrub_all.timer apt-daily.timer \
    apt-daily-upgrade.timer dpkg-db-backup.timer
  # What a VM without graphics, device mapper, FUSE or foreign binaries never
  # uses; each costs seconds of an emulated CPU at boot.
  systemctl mask systemd-binfmt.service modprobe@drm.service \
    modprobe@dm_mod.service modprobe@efi_pstore.service modprobe@fuse.service \
    modprobe@loop.service
}

shrink_initramfs() {
  # The initramfs only has to find the virtio disk; the rest loads from it.
  info "initramfs with the virtio disk drivers only"
  echo MODULES=list >/etc/initramfs-tools/conf.d/minicluster.conf
  printf '%s\n' virtio_pci virtio_blk >>/etc/initramfs-tools/modules
  update-initramfs -u -k all
}

install_grub() {
  info "installing GRUB on ${BOX_DISK}"
  grub-install --target=i386-pc --modules="part_msdos ext2" "${BOX_DISK}"
  # grub-mkconfig writes root=UUID=... only when /dev/disk/by-uuid has the link,
  # which harness/vmimage.py made in this chroot's /dev.
  update-grub
  grep -q "root=UUID=${BOX_ROOT_UUID}" /boot/grub/grub.cfg
}

strip_identity() {
  info "removing host keys, machine id and package caches"
  # Every VM makes its own on first boot.
  rm -f /etc/ssh/ssh_host_*
  : >/etc/machine-id
  rm -f /var/lib/dbus/machine-id
  # The VMs reach no mirror; installed packages install offline without lists.
  apt-get clean
  rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log
}

main() {
  write_fstab
  add_vagrant_user
  enable_services
  shrink_initramfs
  install_grub
  strip_identity
}

main "$@"
