"""The storage run: three emulated libvirt VMs provisioned by the storage scripts.

The run reads a copy of cluster.yaml with a cluster.local.yaml beside it that
picks the libvirt provider, the local box of ``minicluster box build``, software
emulation (driver qemu), virtiofs for /vagrant and an isolated management
network. Node names and addresses stay cluster.yaml's (MINICLUSTER_STORAGE_SUBNET
moves them to another /24 where that subnet is taken on this machine). Vagrant
keeps the run's machines in ``.vagrant-storage``, apart from any other cluster of
the checkout.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness import settings as settings_module
from harness.checks import Context
from harness.cluster import created_machines
from harness.errors import HarnessError
from harness.remote import hosts_from_vagrant
from harness.vagrant import Vagrant, parse_progress
from tests.storage import libvirt

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
DOTFILE = ".vagrant-storage"
PROVISIONERS = ["nfs-server", "nfs-mount"]
# The management network: DHCP and SSH from the host, no route anywhere else.
MANAGEMENT_NETWORK = "minicluster-storage"
MANAGEMENT_ADDRESS = "192.168.123.0/24"
SUBNET_VARIABLE = "MINICLUSTER_STORAGE_SUBNET"
VAGRANT_ENV = {
    "VAGRANT_DEFAULT_PROVIDER": "libvirt",
    "VAGRANT_CHECKPOINT_DISABLE": "1",
    "VAGRANT_BOX_UPDATE_CHECK_DISABLE": "1",
    "VAGRANT_NO_COLOR": "1",
    "LIBVIRT_DEFAULT_URI": "qemu:///system",
}


def overrides(box: str, subnet: str | None = None) -> dict[str, Any]:
    """Return the run's cluster.local.yaml: provider, box, sizes, libvirt options."""
    local: dict[str, Any] = {
        "provider": "libvirt",
        # A box added from a file has version 0.
        "box": {"name": box, "version": "0"},
        "nodes": {
            # The smallest sizes the settings accept; the storage provisioners run
            # no Kubernetes, and an idle vCPU costs an emulated guest nothing.
            "control_plane": {"cpus": 2, "memory_mb": 1700},
            "workers": {"cpus": 1, "memory_mb": 1024},
        },
        "providers": {
            "libvirt": {
                "driver": "qemu",
                # TCG translates qemu64's SSE far faster than host-model's AVX2.
                "cpu_model": "qemu64",
                # Two-way like 9p and NFS, but needs neither in the guest's kernel
                # (Debian's cloud kernel has no 9p) nor an NFS server on the host.
                "synced_folder_type": "virtiofs",
                "management_network_name": MANAGEMENT_NETWORK,
                "management_network_address": MANAGEMENT_ADDRESS,
                "management_network_mode": "none",
            }
        },
    }
    if subnet:
        net = ipaddress.IPv4Network(subnet)
        local["network"] = {
            "node_subnet": str(net),
            "first_address": str(net.network_address + 10),
        }
    return local


def write_config(directory: Path, box: str, subnet: str | None = None) -> Path:
    """Write a copy of cluster.yaml and the run's local file; return the copy."""
    directory.mkdir(parents=True, exist_ok=True)
    base = directory / "cluster.yaml"
    shutil.copyfile(ROOT / "cluster.yaml", base)
    text = yaml.safe_dump(overrides(box, subnet), sort_keys=False)
    (directory / "cluster.local.yaml").write_text(text, encoding="utf-8")
    return base


def run_environment(
    environ: Mapping[str, str], config: Path, root: Path = ROOT
) -> dict[str, str]:
    """Return the environment of the run's vagrant and settings calls."""
    return {
        **environ,
        **VAGRANT_ENV,
        "MINICLUSTER_CONFIG": str(config),
        "VAGRANT_DOTFILE_PATH": str(root / DOTFILE),
    }


def overlapping_routes(networks: list[str]) -> list[str]:
    """Return the host's routes that overlap ``networks``, as ``net dev IFACE``."""
    out = subprocess.run(
        ["ip", "-j", "-4", "route", "show"], capture_output=True, text=True, check=True
    ).stdout
    wanted = [ipaddress.IPv4Network(n) for n in networks]
    found = []
    for route in json.loads(out or "[]"):
        dst = route.get("dst", "")
        if dst == "default":
            continue
        net = ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False)
        if any(net.overlaps(w) for w in wanted):
            found.append(f"{net} dev {route.get('dev', '?')}")
    return found


@dataclass(frozen=True)
class UpTimes:
    """How long ``vagrant up`` took to boot every machine, and then to provision."""

    boot_s: float
    provision_s: float
    total_s: float


def up_times(stamped: list[tuple[float, str]], start: float, end: float) -> UpTimes:
    """Split a timed ``vagrant up`` log into boot and provisioning.

    Boot ends when the last machine says "Machine booted and ready!";
    provisioning runs from the first "Running provisioner:" to the end.
    """
    booted = [t for t, line in stamped if "Machine booted and ready" in line]
    provisioning = [t for t, line in stamped if "Running provisioner:" in line]
    boot_end = max(booted) if booted else end
    provision_start = min(provisioning) if provisioning else end
    return UpTimes(boot_end - start, end - provision_start, end - start)


class StorageRun:
    """The run's Vagrant environment, settings and SSH runners."""

    def __init__(self, results: Path, environ: Mapping[str, str], box: str) -> None:
        self.results = results
        self.config = write_config(
            results / "config", box, environ.get(SUBNET_VARIABLE)
        )
        self.env = run_environment(environ, self.config)
        self.vagrant = Vagrant(ROOT, "libvirt", self.env)

    @property
    def dotfile(self) -> Path:
        return Path(self.env["VAGRANT_DOTFILE_PATH"])

    def created(self) -> list[str]:
        """Return the machines this run's dotfile says exist."""
        return created_machines(ROOT, self.env)

    def verify(self, expr: str, report: Path) -> subprocess.CompletedProcess[str]:
        """Run ``minicluster verify -k expr --json report`` on the run's VMs."""
        cli = [sys.executable, "-m", "harness.cli", "verify", "-k", expr]
        return subprocess.run(
            [*cli, "--json", str(report)],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )

    def settings(self) -> Any:
        return settings_module.load(ROOT, self.env, provider="libvirt")

    def up(self) -> UpTimes:
        """Bring the machines up with the storage provisioners; log to up.log."""
        stamped: list[tuple[float, str]] = []
        start = time.monotonic()
        log = self.results / "up.log"
        with log.open("w", encoding="utf-8") as out:
            for line in self.vagrant.up(provision_with=PROVISIONERS):
                now = time.monotonic()
                stamped.append((now, line))
                out.write(f"{now - start:7.1f} {line}")
                out.flush()
                progress = parse_progress(line)
                # The "-- Name: value" lines list each domain's settings.
                if (
                    progress
                    and not progress.output
                    and not progress.phase.startswith("-- ")
                ):
                    logger.info("%s: %s", progress.node, progress.phase)
        return up_times(stamped, start, time.monotonic())

    def context(self) -> Context:
        """Return the checks' context: the run's settings and one runner per VM."""
        return Context(self.settings(), hosts_from_vagrant(self.vagrant))

    def destroy(self) -> None:
        """Destroy the run's machines; none left is fine."""
        if not self.dotfile.exists():
            return
        self.vagrant.destroy()
        shutil.rmtree(self.dotfile, ignore_errors=True)


@dataclass
class HostState:
    """What the run changed on this machine, to undo: daemons, /dev/kvm, libvirt."""

    before: libvirt.Inventory
    started: list[tuple[str, int]] = field(default_factory=list)
    kvm: tuple[int, int, int] | None = None


def prepare_host() -> HostState:
    """Start libvirt if needed, fix /dev/kvm's owner, list what libvirt holds."""
    kvm = libvirt.share_kvm_with_qemu()
    started = libvirt.start_daemons()
    # An interrupted run may have left its isolated network behind.
    libvirt.remove_networks([MANAGEMENT_NETWORK])
    return HostState(libvirt.inventory(), started, kvm)


LOCK = Path("/run/lock/minicluster-storage.lock")


@contextmanager
def exclusive() -> Iterator[None]:
    """Hold the storage run's lock: one run at a time per machine.

    Two runs would share libvirt's networks and the checkout's dotfile, and each
    would tear down what the other made.
    """
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise HarnessError(
                f"another storage run holds {LOCK} (pid {holder}); wait for it to "
                "finish: two runs would tear down each other's VMs"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        try:
            yield
        finally:
            lock.truncate(0)
            fcntl.flock(lock, fcntl.LOCK_UN)


def restore_host(state: HostState) -> list[str]:
    """Remove what libvirt holds new, undo the host changes; return what stayed."""
    try:
        libvirt.remove_new(state.before)
        left = libvirt.inventory().new_since(state.before)
    finally:
        libvirt.restore_kvm(state.kvm)
        libvirt.stop_daemons(state.started)
    return left


def tear_down(run: StorageRun | None, state: HostState | None) -> list[str]:
    """Destroy the VMs and undo the host changes; return what went wrong or stayed.

    Each step runs even when the one before failed: libvirt's own removal
    catches what a failed ``vagrant destroy`` left.
    """
    problems = []
    if run is not None:
        try:
            run.destroy()
        except HarnessError as exc:
            logger.warning("vagrant destroy failed: %s", exc)
            problems.append(f"vagrant destroy failed: {str(exc).splitlines()[0]}")
            shutil.rmtree(run.dotfile, ignore_errors=True)
    if state is not None:
        problems += [f"left in libvirt: {entry}" for entry in restore_host(state)]
    return problems
