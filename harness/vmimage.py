"""The libvirt Vagrant box of the VM providers, built from Debian's packages only.

``minicluster box build`` runs debootstrap for a bookworm system with Debian's
cloud kernel, GRUB, systemd, sshd and the NFS server and client on a partitioned
disk image, adds the files of ``images/vm/`` and a ``vagrant`` user, and packs
the disk as a qcow2 libvirt box. The box is cached under
``${MINICLUSTER_CACHE:-~/.cache/minicluster}/box/<inputs>/`` and added to Vagrant
under a local name; the hash of the inputs travels in the box's ``info.json``, so
an unchanged build is neither rebuilt nor re-added. Downloaded packages are kept
in the cache, so a changed input costs no second download.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import struct
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.cache import cache_root
from harness.errors import HarnessError
from harness.rootfs import (
    DEFAULT_MIRROR,
    SUITE,
    debootstrap,
    find_vagrant_key,
    run_step,
)

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGE_DIR = REPO_ROOT / "images" / "vm"
DEFAULT_NAME = "minicluster/bookworm"
BOX_FILE = "minicluster-bookworm.box"
# Bump when the build changes in a way the other inputs do not show.
FORMAT = 2

PACKAGES = (
    # boot: Debian's kernel for VMs (virtio, NFS client and server as modules)
    "linux-image-cloud-amd64",
    "initramfs-tools",
    "grub-pc",
    "systemd",
    "systemd-sysv",
    "udev",
    "kmod",
    # D-Bus for hostnamectl, which Vagrant uses to name the machine
    "dbus",
    # how Vagrant reaches the machine and syncs folders
    "openssh-server",
    "sudo",
    "rsync",
    "iproute2",
    # the share: server on the nfs.server node, client on every node
    "nfs-kernel-server",
    "nfs-common",
    # the checks' tools, and the storage run's writer (nfs-common needs python3 too)
    "procps",
    "python3",
    "iputils-ping",
    "netbase",
)

# Kernel options the VMs cannot do without ("y" or "m"), from /boot/config-*.
KERNEL_OPTIONS = (
    "CONFIG_VIRTIO_PCI",
    "CONFIG_VIRTIO_BLK",
    "CONFIG_VIRTIO_NET",
    "CONFIG_NFS_FS",
    "CONFIG_NFS_V4",
    "CONFIG_NFSD",
    "CONFIG_NFSD_V4",
)
# Modules that must be in the initramfs to find the root disk.
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk")

SECTOR = 512
# The root partition starts at 1 MiB; GRUB's core image lives in the gap before.
PARTITION_START = 2048
# Character devices the chroot needs: name, major, minor.
CHROOT_DEVICES = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
)
CHROOT_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C",
    "DEBIAN_FRONTEND": "noninteractive",
}


class BoxBuildError(HarnessError):
    """The box could not be built or added."""


@dataclass(frozen=True)
class Box:
    """A built box: its Vagrant name, file, inputs hash and what it cost."""

    name: str
    path: Path
    inputs: str
    built: bool
    added: bool
    seconds: float


def cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Return the box cache: built boxes by inputs, and downloaded packages."""
    return cache_root(environ) / "box"


def image_files() -> list[Path]:
    """Return every file of images/vm, sorted."""
    return sorted(p for p in IMAGE_DIR.rglob("*") if p.is_file())


def metadata() -> dict[str, object]:
    """Return the box's metadata.json (provider, format, virtual size in GiB)."""
    data: dict[str, object] = json.loads((IMAGE_DIR / "metadata.json").read_text())
    return data


def inputs_digest(key: Path, mirror: str, packages: Sequence[str] = PACKAGES) -> str:
    """Return the hash of everything that goes into the box."""
    digest = hashlib.sha256()
    header = {
        "format": FORMAT,
        "suite": SUITE,
        "mirror": mirror,
        "packages": sorted(packages),
        "kernel_options": KERNEL_OPTIONS,
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    for path in image_files():
        mode = path.stat().st_mode & 0o777
        digest.update(f"{path.relative_to(IMAGE_DIR)} {mode:o}\n".encode())
        digest.update(path.read_bytes())
    digest.update(key.read_bytes())
    return digest.hexdigest()[:16]


def write_mbr(disk: Path, size: int) -> None:
    """Write an MBR partition table with one bootable Linux partition."""
    sectors = size // SECTOR - PARTITION_START
    # status, CHS first (unused: LBA only), type 0x83, CHS last, LBA first, count
    entry = struct.pack(
        "<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff",
        PARTITION_START, sectors,
    )  # fmt: skip
    table = bytearray(SECTOR)
    table[446:462] = entry
    table[510:512] = b"\x55\xaa"
    with disk.open("r+b") as f:
        f.write(table)


@contextmanager
def loop_device(disk: Path) -> Iterator[tuple[str, str]]:
    """Attach ``disk`` as a loop device; yield the disk and partition devices."""
    dev = run_step(["losetup", "--find", "--show", "--partscan", str(disk)], "losetup")
    dev = dev.strip()
    try:
        part = f"{dev}p1"
        # Some kernels flag the device for a partition scan yet add no partition;
        # partx adds what is missing and leaves the rest.
        run_step(["partx", "--update", dev], "partx")
        for _ in range(50):
            if os.path.exists(part):
                break
            time.sleep(0.1)
        else:
            raise BoxBuildError(f"{part} did not appear after partx --update {dev}")
        yield dev, part
    finally:
        run_step(["losetup", "--detach", dev], "losetup --detach")


@contextmanager
def mounted(source: str, target: Path, *options: str) -> Iterator[None]:
    """Mount ``source`` on ``target`` for the duration of the block."""
    run_step(["mount", *options, source, str(target)], f"mounting {target}")
    try:
        yield
    finally:
        run_step(["umount", str(target)], f"unmounting {target}")


@contextmanager
def chroot_dev(root: Path, disk: str, part: str, root_uuid: str) -> Iterator[None]:
    """Give the chroot its own /dev: basic nodes, the disk, and its UUID link.

    The host's /dev is never bound in: udev's and GRUB's scripts would then
    change the host's device nodes.
    """
    dev = root / "dev"
    with mounted("tmpfs", dev, "-t", "tmpfs", "-o", "mode=0755,size=16m"):
        for name, major, minor in CHROOT_DEVICES:
            os.mknod(dev / name, 0o666 | 0o020000, os.makedev(major, minor))
        for node in (disk, part):
            rdev = os.stat(node).st_rdev
            os.mknod(dev / Path(node).name, 0o660 | 0o060000, rdev)
        (dev / "disk/by-uuid").mkdir(parents=True)
        (dev / "disk/by-uuid" / root_uuid).symlink_to(f"../../{Path(part).name}")
        (dev / "pts").mkdir()
        (dev / "shm").mkdir()
        yield


def check_kernel(root: Path) -> str:
    """Return the kernel version installed in ``root``, once it is fit for the VMs."""
    configs = sorted((root / "boot").glob("config-*"))
    if len(configs) != 1:
        raise BoxBuildError(f"expected one kernel in {root}/boot, found {configs}")
    version = configs[0].name.removeprefix("config-")
    options = dict(
        line.split("=", 1)
        for line in configs[0].read_text().splitlines()
        if line.startswith("CONFIG_") and "=" in line
    )
    missing = [o for o in KERNEL_OPTIONS if options.get(o) not in {"y", "m"}]
    if missing:
        raise BoxBuildError(
            f"kernel {version} lacks {', '.join(missing)}; "
            "the box needs virtio and the NFS client and server"
        )
    initrd = run_step(
        ["chroot", str(root), "lsinitramfs", f"/boot/initrd.img-{version}"],
        "listing the initramfs",
        env=CHROOT_ENV,
    )
    absent = [m for m in INITRAMFS_MODULES if f"/{m}.ko" not in initrd]
    if absent:
        raise BoxBuildError(
            f"initramfs of {version} lacks {', '.join(absent)}; "
            "the VMs would not find their disk"
        )
    return version


def configure(root: Path, disk: str, part: str, root_uuid: str, key: Path) -> None:
    """Copy images/vm/rootfs in and run images/vm/configure.sh in the chroot."""
    shutil.copytree(IMAGE_DIR / "rootfs", root, dirs_exist_ok=True)
    shutil.copyfile(key, root / "tmp/vagrant.pub")
    shutil.copyfile(IMAGE_DIR / "configure.sh", root / "tmp/configure.sh")
    env = {
        **CHROOT_ENV,
        "BOX_DISK": f"/dev/{Path(disk).name}",
        "BOX_ROOT_UUID": root_uuid,
        "BOX_VAGRANT_KEY": "/tmp/vagrant.pub",
    }
    with ExitStack() as stack:
        stack.enter_context(chroot_dev(root, disk, part, root_uuid))
        stack.enter_context(mounted("proc", root / "proc", "-t", "proc"))
        stack.enter_context(mounted("sysfs", root / "sys", "-t", "sysfs"))
        out = run_step(
            ["chroot", str(root), "/bin/bash", "/tmp/configure.sh"],
            "configuring the box",
            env=env,
        )
    logger.debug("configure.sh said:\n%s", out)
    for name in ("vagrant.pub", "configure.sh"):
        (root / "tmp" / name).unlink()


def package_box(disk: Path, out: Path, info: Mapping[str, str]) -> None:
    """Pack ``disk`` as compressed qcow2 with metadata.json and info.json."""
    work = out.parent
    image = work / "box.img"
    run_step(
        [
            "qemu-img",
            "convert",
            # zstd packs as tight as zlib here, six times faster, and reads faster.
            "-c",
            "-o",
            "compression_type=zstd",
            "-f",
            "raw",
            "-O",
            "qcow2",
            str(disk),
            str(image),
        ],
        "qemu-img convert",
    )
    (work / "metadata.json").write_text(json.dumps(metadata()) + "\n")
    # `vagrant box list -i` shows info.json; the inputs hash says what was built.
    (work / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    with tarfile.open(out, "w") as tar:
        for name in ("metadata.json", "info.json", "box.img"):
            tar.add(work / name, arcname=name)
            (work / name).unlink()


def build_box(out: Path, *, mirror: str, key: Path, inputs: str) -> None:
    """Build the box file ``out`` from scratch."""
    gib = int(str(metadata()["virtual_size"]))
    debs = out.parent.parent / "debs"
    with tempfile.TemporaryDirectory(prefix="build-", dir=out.parent) as tmp:
        work = Path(tmp)
        disk = work / "disk.raw"
        with disk.open("wb") as f:
            f.truncate(gib << 30)
        write_mbr(disk, gib << 30)
        root_uuid = str(uuid.uuid4())
        root = work / "root"
        root.mkdir()
        with ExitStack() as stack:
            dev, part = stack.enter_context(loop_device(disk))
            run_step(["mkfs.ext4", "-q", "-U", root_uuid, "-L", "root", part], "mkfs")
            stack.enter_context(mounted(part, root))
            logger.info("installing Debian %s packages (debootstrap)", SUITE)
            debootstrap(root, PACKAGES, mirror, debs)
            logger.info("configuring the box")
            configure(root, dev, part, root_uuid, key)
            # After configure.sh, which rebuilt the initramfs.
            kernel = check_kernel(root)
            logger.info("kernel %s has virtio and NFS", kernel)
            # Free blocks hold deleted package files; give them back to the file.
            run_step(["fstrim", str(root)], "fstrim")
        logger.info("packing %s", out)
        info = {
            "minicluster_inputs": inputs,
            "debian_suite": SUITE,
            "kernel": kernel,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        package_box(disk, work / out.name, info)
        (work / out.name).rename(out)


def prune_cache(keep: Path) -> None:
    """Remove the boxes of other inputs from the cache: a new build replaces them."""
    for entry in keep.parent.iterdir():
        if entry != keep and entry.is_dir() and (entry / BOX_FILE).is_file():
            shutil.rmtree(entry)
            logger.info("removed the superseded box %s", entry)


def vagrant_home(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get("VAGRANT_HOME") or Path.home() / ".vagrant.d")


def added_inputs(name: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """Return the inputs hash of the box Vagrant has as ``name``, if any."""
    box_dir = vagrant_home(environ) / "boxes" / name.replace("/", "-VAGRANTSLASH-")
    info = box_dir / "0" / "libvirt" / "info.json"
    try:
        value = json.loads(info.read_text()).get("minicluster_inputs")
    except (OSError, ValueError):
        return None
    return str(value) if value else None


def add_box(path: Path, name: str) -> None:
    """Add the box file ``path`` to Vagrant as ``name`` (version 0, libvirt)."""
    env = {**os.environ, "VAGRANT_CHECKPOINT_DISABLE": "1", "VAGRANT_NO_COLOR": "1"}
    run_step(
        ["vagrant", "box", "add", "--force", "--name", name, str(path)],
        f"vagrant box add {name}",
        env=env,
    )


def ensure_box(
    name: str = DEFAULT_NAME,
    *,
    mirror: str = DEFAULT_MIRROR,
    key: Path | None = None,
    force: bool = False,
    add: bool = True,
) -> Box:
    """Build the box unless cached, and add it to Vagrant unless already there."""
    started = time.monotonic()
    key = key or find_vagrant_key()
    inputs = inputs_digest(key, mirror)
    out = cache_dir() / inputs / BOX_FILE
    built = False
    if force or not out.is_file():
        if os.geteuid() != 0:
            raise BoxBuildError(
                "building the box needs root (losetup, mount, debootstrap, chroot); "
                "run `sudo minicluster box build`"
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        build_box(out, mirror=mirror, key=key, inputs=inputs)
        built = True
        logger.info("built %s in %.0f s", out, time.monotonic() - started)
        prune_cache(out.parent)
    else:
        logger.info("box %s is cached (inputs %s)", out, inputs)
    added = False
    if add and (built or added_inputs(name) != inputs):
        logger.info("adding %s to Vagrant as %s", out.name, name)
        add_box(out, name)
        added = True
    return Box(name, out, inputs, built, added, time.monotonic() - started)


def _run_build(args: argparse.Namespace) -> int:
    box = ensure_box(
        args.name,
        mirror=args.mirror,
        key=args.vagrant_key,
        force=args.force,
        add=not args.no_add,
    )
    state = "built" if box.built else "reused"
    logger.info("%s box %s (%s, inputs %s)", state, box.name, box.path, box.inputs)
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``minicluster box build``."""
    box = subparsers.add_parser("box", help="the libvirt Vagrant box of the VMs")
    actions = box.add_subparsers(dest="box_command", required=True)
    build = actions.add_parser(
        "build", help="build the libvirt box from Debian's packages (cached)"
    )
    build.add_argument(
        "--name",
        default=DEFAULT_NAME,
        help="local box name to add it under (default: %(default)s)",
    )
    build.add_argument(
        "--mirror",
        default=os.environ.get("MINICLUSTER_DEBIAN_MIRROR", DEFAULT_MIRROR),
        help="Debian mirror for debootstrap (default: %(default)s)",
    )
    build.add_argument(
        "--vagrant-key", type=Path, help="Vagrant's insecure public key to authorize"
    )
    build.add_argument(
        "--force", action="store_true", help="rebuild even if the inputs are unchanged"
    )
    build.add_argument(
        "--no-add", action="store_true", help="build only; do not `vagrant box add`"
    )
    build.set_defaults(func=_run_build)
