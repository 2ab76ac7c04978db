"""The host side of the storage VMs: libvirt's daemons, /dev/kvm, libvirt's objects.

Debian's libvirt runs here without systemd, so the run starts ``virtlogd``,
``virtlockd`` and ``libvirtd`` itself when none answers, and stops exactly
those afterwards. Everything libvirt holds (domains, networks, storage pools and
volumes) is listed before the run; what is new afterwards is removed, and the
run fails if anything new is left.
"""

from __future__ import annotations

import grp
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

logger = logging.getLogger(__name__)

URI = "qemu:///system"
# Started in this order, stopped in reverse; each writes its pid file as root.
DAEMONS = (
    ("virtlogd", Path("/run/virtlogd.pid")),
    ("virtlockd", Path("/run/virtlockd.pid")),
    ("libvirtd", Path("/run/libvirtd.pid")),
)
KVM = Path("/dev/kvm")
VIRSH_TIMEOUT_S = 120


class LibvirtError(HarnessError):
    """A virsh command or a libvirt daemon failed."""


def virsh(*args: str, check: bool = True) -> str:
    """Run ``virsh -c qemu:///system ARGS``; return its stdout."""
    logger.debug("RUN virsh %s", " ".join(args))
    try:
        done = subprocess.run(
            ["virsh", "-c", URI, *args],
            capture_output=True,
            text=True,
            timeout=VIRSH_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise LibvirtError(
            "virsh not found; install libvirt-clients and libvirt-daemon-system"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise LibvirtError(f"virsh {' '.join(args)} hung for {exc.timeout} s") from exc
    if check and done.returncode != 0:
        raise LibvirtError(
            f"virsh {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}"
        )
    return done.stdout


def is_up() -> bool:
    """Tell whether libvirtd answers on qemu:///system."""
    try:
        virsh("version")
    except LibvirtError:
        return False
    return True


def host_has_nfs_server() -> bool:
    """Tell whether this host can export /vagrant over NFS (libvirt's default).

    Where it cannot, the Vagrantfile is validated with 9p folders, which
    vagrant-libvirt checks by asking libvirtd.
    """
    return bool(shutil.which("exportfs")) and "nfsd" in Path(
        "/proc/filesystems"
    ).read_text(encoding="utf-8")


def _running(name: str, pidfile: Path) -> int | None:
    """Return the pid of daemon ``name`` from its pid file, if it runs."""
    try:
        pid = int(pidfile.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if comm == name else None


def _wait(what: str, probe: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(probe) and probe():
            return
        time.sleep(0.5)
    raise LibvirtError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def start_daemons() -> list[tuple[str, int]]:
    """Start the libvirt daemons that do not run; return those started (name, pid)."""
    if is_up():
        logger.info("libvirtd answers on %s already", URI)
        return []
    started = []
    for name, pidfile in DAEMONS:
        if _running(name, pidfile):
            logger.info("%s runs already", name)
            continue
        try:
            subprocess.run([name, "-d"], check=True, capture_output=True, timeout=60)
        except FileNotFoundError as exc:
            raise LibvirtError(
                f"{name} not found; install libvirt-daemon-system"
            ) from exc
        except subprocess.CalledProcessError as exc:
            raise LibvirtError(
                f"{name} -d exited {exc.returncode}: {exc.stderr.decode().strip()}"
            ) from exc
        _wait(f"{name}'s pid file", lambda n=name, p=pidfile: _running(n, p), 30)
        pid = _running(name, pidfile)
        assert pid is not None
        logger.info("started %s (pid %d)", name, pid)
        started.append((name, pid))
    _wait(f"libvirtd to answer on {URI}", is_up, 60)
    return started


def stop_daemons(started: Iterable[tuple[str, int]]) -> None:
    """Stop the daemons ``start_daemons`` started, by pid; gone already is fine."""
    for name, pid in reversed(list(started)):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            logger.info("%s (pid %d) had stopped already", name, pid)
            continue
        try:
            _wait(f"{name} to stop", lambda p=pid: not Path(f"/proc/{p}").exists(), 20)
        except LibvirtError:
            logger.warning("%s (pid %d) ignored SIGTERM; killing it", name, pid)
            os.kill(pid, signal.SIGKILL)
        logger.info("stopped %s (pid %d)", name, pid)


def share_kvm_with_qemu() -> tuple[int, int, int] | None:
    """Give /dev/kvm the owner udev gives it on Debian (root:kvm 0660) if it lacks it.

    libvirt probes QEMU as root but tests /dev/kvm as the libvirt-qemu user (in
    group kvm); when the two disagree it re-probes QEMU on every call, which
    stalls each domain operation for seconds (minutes for a ``vagrant up`` of
    three machines). Returns the old (uid, gid, mode) to restore, or None.
    """
    if not KVM.exists():
        return None
    try:
        kvm_gid = grp.getgrnam("kvm").gr_gid
    except KeyError:
        return None
    st = KVM.stat()
    if st.st_gid == kvm_gid and st.st_mode & 0o060 == 0o060:
        return None
    saved = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
    os.chown(KVM, 0, kvm_gid)
    os.chmod(KVM, 0o660)
    logger.info("gave /dev/kvm to group kvm, mode 0660 (was %d:%d %o)", *saved)
    return saved


def restore_kvm(saved: tuple[int, int, int] | None) -> None:
    if saved is None:
        return
    uid, gid, mode = saved
    os.chown(KVM, uid, gid)
    os.chmod(KVM, mode)
    logger.info("gave /dev/kvm back its owner %d:%d and mode %o", uid, gid, mode)


@dataclass(frozen=True)
class Inventory:
    """What libvirt holds: domains, networks, pools, volumes, and the pools' files."""

    domains: frozenset[str]
    networks: frozenset[str]
    pools: frozenset[str]
    volumes: frozenset[tuple[str, str]]  # (pool, volume)
    files: frozenset[str]  # in the pools' directories, volumes or not

    def new_since(self, before: Inventory) -> list[str]:
        """Return what this inventory holds that ``before`` did not, described."""
        volumes = sorted(self.volumes - before.volumes)
        return (
            [f"domain {d}" for d in sorted(self.domains - before.domains)]
            + [f"network {n}" for n in sorted(self.networks - before.networks)]
            + [f"volume {v} in pool {p}" for p, v in volumes]
            + [f"pool {p}" for p in sorted(self.pools - before.pools)]
            + [f"file {f}" for f in sorted(self.files - before.files)]
        )


# vagrant-libvirt's pool "default", which it defines here when there is none.
POOL_DIRS = (Path("/var/lib/libvirt/images"),)
_POOL_PATH = re.compile(r"<path>([^<]+)</path>")


def _names(text: str) -> frozenset[str]:
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


def parse_vol_list(text: str) -> frozenset[str]:
    """Return the volume names of ``virsh vol-list POOL``.

    Input looks like::

         Name          Path
        --------------------------------------------------
         main_w1.img   /var/lib/libvirt/images/main_w1.img
    """
    lines = text.splitlines()[2:]
    return frozenset(line.split()[0] for line in lines if line.strip())


def inventory() -> Inventory:
    """Return what libvirt holds now."""
    pools = _names(virsh("pool-list", "--all", "--name"))
    volumes = set()
    dirs = set(POOL_DIRS)
    for pool in pools:
        dirs |= {Path(p) for p in _POOL_PATH.findall(virsh("pool-dumpxml", pool))}
        # An inactive pool lists no volumes; its files are still counted below.
        out = virsh("vol-list", "--pool", pool, check=False)
        volumes |= {(pool, vol) for vol in parse_vol_list(out)}
    files = {str(f) for d in dirs if d.is_dir() for f in d.iterdir()}
    return Inventory(
        domains=_names(virsh("list", "--all", "--name")),
        networks=_names(virsh("net-list", "--all", "--name")),
        pools=pools,
        volumes=frozenset(volumes),
        files=frozenset(files),
    )


def remove_new(before: Inventory) -> list[str]:
    """Remove what libvirt holds now but did not in ``before``; return what went."""
    now = inventory()
    for domain in sorted(now.domains - before.domains):
        virsh("destroy", domain, check=False)  # not running is fine
        virsh("undefine", domain, "--managed-save", "--snapshots-metadata")
    for pool, volume in sorted(now.volumes - before.volumes):
        virsh("vol-delete", "--pool", pool, volume)
    for network in sorted(now.networks - before.networks):
        virsh("net-destroy", network, check=False)  # inactive is fine
        virsh("net-undefine", network)
    for pool in sorted(now.pools - before.pools):
        # Undefine only: the directory behind a dir pool is Debian's, not ours.
        virsh("pool-destroy", pool, check=False)
        virsh("pool-undefine", pool)
    # A file the run left in a pool's directory that libvirt no longer lists.
    for path in sorted(inventory().files - before.files):
        Path(path).unlink()
    removed = now.new_since(before)
    for entry in removed:
        logger.info("removed libvirt %s", entry)
    return removed


def remove_networks(names: Iterable[str]) -> list[str]:
    """Remove these networks (an interrupted run's) unless a domain uses them."""
    now = inventory()
    used = {net for domain in now.domains for net in domain_networks(domain)}
    removed = []
    for network in names:
        if network in used:
            logger.warning("libvirt network %s is in use; leaving it", network)
        elif network in now.networks:
            virsh("net-destroy", network, check=False)  # inactive is fine
            virsh("net-undefine", network)
            logger.info("removed libvirt network %s left by an earlier run", network)
            removed.append(f"network {network}")
    return removed


def network_xml(name: str) -> str:
    return virsh("net-dumpxml", name)


def domain_networks(domain: str) -> list[str]:
    """Return the libvirt networks the domain's interfaces are on."""
    out = virsh("domiflist", domain)
    names = []
    for line in out.splitlines()[2:]:
        words = line.split()
        if len(words) >= 3 and words[1] == "network":
            names.append(words[2])
    return names
