"""The docker provider's node image, built from Debian's packages.

``minicluster image build`` runs debootstrap for a bookworm root file system with
systemd, sshd, containerd and every package the provisioners would otherwise
install, adds a ``vagrant`` user and the files of ``images/node/``, and turns the
tree into an image with ``docker import``. The image carries a hash of these
inputs in a label: when the label matches, the build is skipped. Downloaded
packages are kept in the cache, so a changed input costs no second download.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
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
IMAGE_DIR = REPO_ROOT / "images" / "node"
DEFAULT_TAG = "minicluster-node:bookworm"
INPUTS_LABEL = "org.minicluster.node-image.inputs"
# Bump when the build changes in a way the other inputs do not show.
FORMAT = 1

# Everything a node needs, so that no provisioner installs a package on it.
PACKAGES = (
    # the init system, and D-Bus for hostnamectl and runc's systemd cgroup driver
    "systemd",
    "systemd-sysv",
    "dbus",
    # how Vagrant reaches the node
    "openssh-server",
    "sudo",
    # the container runtime and the standard CNI plugins (in /usr/lib/cni)
    "containerd",
    "runc",
    "containernetworking-plugins",
    # what kubeadm's preflight and kubelet look for on the node
    "iptables",
    "conntrack",
    "ebtables",
    "socat",
    "ethtool",
    "iproute2",
    "kmod",
    "procps",
    "ca-certificates",
    # the share: server on the nfs.server node, client on every node
    "nfs-common",
    "nfs-kernel-server",
    # the checks' and the demo's tools
    "curl",
    "iputils-ping",
)

# images/node/<source> -> path in the image, mode.
IMAGE_FILES = (
    ("minicluster-entry.sh", "usr/local/bin/minicluster-entry", 0o755),
    (
        "journald.conf.d/10-minicluster.conf",
        "etc/systemd/journald.conf.d/10-minicluster.conf",
        0o644,
    ),
)
ENTRYPOINT = "/usr/local/bin/minicluster-entry"

# Run inside the new root file system, after the packages are installed.
CUSTOMIZE_SCRIPT = r"""
set -o errexit -o nounset -o pipefail
# Identity is per node: minicluster-entry makes it on first boot.
rm -f /etc/ssh/ssh_host_*
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id
# Vagrant logs in as vagrant with its key and provisions through sudo.
useradd --create-home --shell /bin/bash vagrant
usermod --password '*' vagrant
install -d -m 0700 -o vagrant -g vagrant /home/vagrant/.ssh
install -m 0600 -o vagrant -g vagrant /tmp/vagrant.pub \
  /home/vagrant/.ssh/authorized_keys
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' >/etc/sudoers.d/vagrant
chmod 0440 /etc/sudoers.d/vagrant
systemctl set-default multi-user.target
systemctl enable ssh.service containerd.service
# Only the nfs.server node serves the share, once its provisioner enables it.
systemctl disable nfs-server.service
# Nothing of the build's package downloads belongs in the image.
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /tmp/vagrant.pub
"""


class ImageBuildError(HarnessError):
    """The node image could not be built."""


@dataclass(frozen=True)
class BuildResult:
    """What ``build`` did: the tag, its inputs hash and whether it was reused."""

    tag: str
    inputs: str
    reused: bool
    seconds: float


def cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Return the node image's cache directory (downloaded packages)."""
    return cache_root(environ) / "node-image"


def inputs_digest(key: Path, packages: Sequence[str] = PACKAGES) -> str:
    """Return the hash of everything that goes into the image."""
    digest = hashlib.sha256()
    header = {"format": FORMAT, "suite": SUITE, "packages": sorted(packages)}
    digest.update(json.dumps(header, sort_keys=True).encode())
    digest.update(CUSTOMIZE_SCRIPT.encode())
    digest.update(ENTRYPOINT.encode())
    for source, target, mode in IMAGE_FILES:
        digest.update(f"{source} {target} {mode:o}\n".encode())
        digest.update((IMAGE_DIR / source).read_bytes())
    digest.update(key.read_bytes())
    return digest.hexdigest()[:16]


def image_inputs(tag: str) -> str | None:
    """Return the inputs label of the local image ``tag``, or None if it is absent."""
    return _inspect(tag, "{{ index .Config.Labels " + json.dumps(INPUTS_LABEL) + " }}")


def image_id(tag: str) -> str | None:
    """Return the id of the local image ``tag``, or None if it is absent."""
    return _inspect(tag, "{{.Id}}")


def _inspect(tag: str, template: str) -> str | None:
    """Return ``docker image inspect --format template tag``, or None if absent."""
    done = subprocess.run(
        ["docker", "image", "inspect", "--format", template, tag],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def remove_stale_image(image: str) -> None:
    """Remove the image a rebuild replaced; one still used by a node is kept."""
    done = subprocess.run(
        ["docker", "image", "rm", image], capture_output=True, text=True, check=False
    )
    if done.returncode == 0:
        logger.info("removed the replaced node image %s", image[:19])
    else:
        logger.info(
            "kept the replaced node image %s: %s", image[:19], done.stderr.strip()
        )


def customize_rootfs(rootfs: Path, key: Path) -> None:
    """Add the vagrant user, the image's files and the container settings."""
    for source, target, mode in IMAGE_FILES:
        dest = rootfs / target
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(IMAGE_DIR / source, dest)
        dest.chmod(mode)
    shutil.copyfile(key, rootfs / "tmp/vagrant.pub")
    run_step(
        ["chroot", str(rootfs), "/bin/bash", "-c", CUSTOMIZE_SCRIPT],
        "customizing the root file system",
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
    )


def import_rootfs(rootfs: Path, tag: str, inputs: str) -> None:
    """Turn ``rootfs`` into the local image ``tag`` labelled with ``inputs``."""
    # `docker import` cannot set a stop signal, so the tree is imported under a
    # temporary name and a one-step build on top of it sets the image's settings.
    rootfs_tag = f"{tag.rpartition(':')[0] or tag}:rootfs-{inputs}"
    tar = subprocess.Popen(
        ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", "-", "."],
        stdout=subprocess.PIPE,
    )
    try:
        run_step(
            ["docker", "import", "-", rootfs_tag], "docker import", stdin=tar.stdout
        )
    finally:
        if tar.stdout is not None:
            tar.stdout.close()
        tar.wait()
    if tar.returncode != 0:
        raise ImageBuildError(f"tar of {rootfs} exited {tar.returncode}")
    dockerfile = "\n".join(
        [
            f"FROM {rootfs_tag}",
            f'CMD ["{ENTRYPOINT}"]',
            # systemd halts cleanly on SIGRTMIN+3; SIGTERM only makes it re-execute.
            "STOPSIGNAL SIGRTMIN+3",
            f"LABEL {INPUTS_LABEL}={inputs}",
            "",
        ]
    )
    run_step(
        ["docker", "build", "--quiet", "--tag", tag, "-"],
        "docker build",
        input=dockerfile.encode(),
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    run_step(["docker", "image", "rm", rootfs_tag], "removing the temporary tag")


def build(
    tag: str = DEFAULT_TAG,
    *,
    mirror: str = DEFAULT_MIRROR,
    key: Path | None = None,
    force: bool = False,
) -> BuildResult:
    """Build the node image ``tag`` unless an image of the same inputs exists."""
    started = time.monotonic()
    key = key or find_vagrant_key()
    inputs = inputs_digest(key)
    if not force and image_inputs(tag) == inputs:
        logger.info("node image %s is up to date (inputs %s)", tag, inputs)
        return BuildResult(tag, inputs, True, time.monotonic() - started)
    if os.geteuid() != 0:
        raise ImageBuildError(
            "building the node image needs root (debootstrap, chroot)"
        )
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    previous = image_id(tag)
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=cache) as work:
        rootfs = Path(work) / "rootfs"
        logger.info("installing Debian %s packages into %s", SUITE, rootfs)
        debootstrap(rootfs, PACKAGES, mirror, cache / "debs")
        logger.info("adding the vagrant user and %s", IMAGE_DIR)
        customize_rootfs(rootfs, key)
        logger.info("importing %s (inputs %s)", tag, inputs)
        import_rootfs(rootfs, tag, inputs)
    if previous and previous != image_id(tag):
        remove_stale_image(previous)
    seconds = time.monotonic() - started
    logger.info("node image %s built in %.0f s", tag, seconds)
    return BuildResult(tag, inputs, False, seconds)


def _settings_tag(root: Path) -> str:
    """Return ``providers.docker.image`` of the settings under ``root``."""
    from harness import settings

    image = settings.load(root).providers["docker"]["image"]
    return str(image)


def _run_build(args: argparse.Namespace) -> int:
    result = build(
        args.tag or _settings_tag(args.root),
        mirror=args.mirror,
        key=args.vagrant_key,
        force=args.force,
    )
    state = "reused" if result.reused else "built"
    logger.info("%s %s (inputs %s)", state, result.tag, result.inputs)
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``minicluster image build``."""
    image = subparsers.add_parser("image", help="the docker provider's node image")
    actions = image.add_subparsers(dest="image_command", required=True)
    build_cmd = actions.add_parser(
        "build", help="build the node image from Debian's packages (cached)"
    )
    build_cmd.add_argument(
        "--tag", help="image name (default: providers.docker.image of the settings)"
    )
    build_cmd.add_argument(
        "--mirror",
        default=os.environ.get("MINICLUSTER_DEBIAN_MIRROR", DEFAULT_MIRROR),
        help="Debian mirror for debootstrap (default: %(default)s)",
    )
    build_cmd.add_argument(
        "--vagrant-key", type=Path, help="Vagrant's insecure public key to authorize"
    )
    build_cmd.add_argument(
        "--force", action="store_true", help="rebuild even if the inputs are unchanged"
    )
    build_cmd.set_defaults(func=_run_build)
