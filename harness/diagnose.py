"""Host prerequisites and the usual causes of a failed bring-up, each with its fix."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.checks.base import CheckResult, failed, passed, skipped
from harness.kube import kubeconfig_path

NETWORKS_CONF = Path("/etc/vbox/networks.conf")
PROVIDER_TOOLS = {
    "virtualbox": ("VBoxManage", "install VirtualBox 7 from virtualbox.org"),
    "libvirt": (
        "virsh",
        "`apt-get install libvirt-daemon-system vagrant-libvirt dnsmasq-base`",
    ),
    "docker": ("docker", "`apt-get install docker.io`"),
}
MEMORY_MARGIN_MB = 1024  # what the host itself needs beside the nodes


def _run(argv: list[str], timeout_s: float = 20) -> tuple[int, str]:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except FileNotFoundError:
        return 127, f"{argv[0]}: not found"
    except subprocess.TimeoutExpired:
        return 124, f"{' '.join(argv)}: no answer in {timeout_s:g} s"
    return done.returncode, (done.stdout + done.stderr).strip()


def vagrant_installed(settings: Any) -> CheckResult:
    code, text = _run(["vagrant", "--version"])
    if code == 0:
        return passed(text)
    return failed(text, "install Vagrant >= 2.3 (`apt-get install vagrant`)")


def provider_tool(settings: Any) -> CheckResult:
    tool, fix = PROVIDER_TOOLS[settings.provider]
    path = shutil.which(tool)
    if path is None:
        return failed(f"{tool} not found for provider {settings.provider}", fix)
    return passed(f"{tool} at {path}")


def provider_service(settings: Any) -> CheckResult:
    """The provider's daemon answers (libvirtd, dockerd)."""
    if settings.provider == "docker":
        code, text = _run(["docker", "info", "--format", "{{.ServerVersion}}"])
        fix = "start the daemon: `systemctl start docker` (or `dockerd &`)"
    elif settings.provider == "libvirt":
        code, text = _run(["virsh", "-c", "qemu:///system", "version"])
        fix = "start libvirtd: `systemctl start libvirtd` (or virtlogd -d; libvirtd -d)"
    else:
        return skipped("VirtualBox has no daemon to ask")
    if code == 0:
        return passed(text.splitlines()[0] if text else "answers")
    return failed(text.splitlines()[-1] if text else f"exit {code}", fix)


def virtualisation(settings: Any) -> CheckResult:
    """VM providers need VT-x/AMD-V; the docker provider does not."""
    if settings.provider == "docker":
        return skipped("the docker provider needs no hardware virtualisation")
    cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    flags = {"vmx", "svm"} & set(cpuinfo.split())
    kvm = Path("/dev/kvm").exists()
    if flags and kvm:
        return passed(f"{'/'.join(sorted(flags))} and /dev/kvm")
    driver = settings.providers.get("libvirt", {}).get("driver")
    if settings.provider == "libvirt" and driver == "qemu":
        return skipped("libvirt driver qemu emulates the CPU (slow, but works)")
    return failed(
        "no hardware virtualisation (no vmx/svm flag or no /dev/kvm)",
        "enable VT-x/AMD-V in the firmware, or use provider docker "
        "(MINICLUSTER_PROVIDER=docker)",
    )


def memory(settings: Any) -> CheckResult:
    want = sum(node.memory_mb for node in settings.nodes) + MEMORY_MARGIN_MB
    meminfo = Path("/proc/meminfo").read_text(encoding="utf-8")
    fields = dict(line.split(":", 1) for line in meminfo.splitlines() if ":" in line)
    available = int(fields["MemAvailable"].split()[0]) // 1024
    seen = f"{available} MB available, the nodes need {want} MB"
    if available >= want:
        return passed(seen)
    return failed(
        seen,
        "lower memory_mb or workers.count in cluster.local.yaml, or free memory",
    )


def networks_conf(settings: Any) -> CheckResult:
    if settings.provider != "virtualbox":
        return skipped(f"only VirtualBox reads {NETWORKS_CONF}")
    if not NETWORKS_CONF.is_file():
        return passed(f"no {NETWORKS_CONF}: VirtualBox allows 192.168.56.0/21")
    ranges = NETWORKS_CONF.read_text(encoding="utf-8").split()
    return passed(f"{NETWORKS_CONF}: {' '.join(ranges)}")


def address_free(settings: Any) -> CheckResult:
    """No interface of this machine already holds a node address."""
    code, text = _run(["ip", "-o", "-4", "addr", "show"])
    if code != 0:
        return skipped(f"cannot list addresses: {text}")
    taken = [n.address for n in settings.nodes if f" {n.address}/" in text]
    if taken:
        return failed(
            f"already on an interface here: {', '.join(taken)}",
            "pick another network.node_subnet in cluster.local.yaml",
        )
    return passed(f"no interface holds {settings.node_subnet} node addresses")


def disk_space(settings: Any) -> CheckResult:
    free_gb = shutil.disk_usage(settings.root).free / 2**30
    seen = f"{free_gb:.1f} GiB free in {settings.root}"
    if free_gb >= 10:
        return passed(seen)
    return failed(seen, "free 10 GiB: boxes and node disks need it")


def api_reachable(settings: Any) -> CheckResult:
    """A stale kubeconfig points at an address nothing answers on."""
    path = kubeconfig_path(settings.root)
    if not path.is_file():
        return skipped(f"no {path} yet (written by the control plane's provisioner)")
    address = f"{settings.control_plane.address}:6443"
    try:
        with socket.create_connection((settings.control_plane.address, 6443), 3):
            return passed(f"API server port open at {address}")
    except OSError as exc:
        return failed(
            f"nothing answers at {address}: {exc}",
            "`minicluster status`; if the control plane runs, "
            "`vagrant provision control-plane --provision-with control-plane.sh`",
        )


def ssh_agent_keys(settings: Any) -> CheckResult:
    """An SSH_AUTH_SOCK with many keys makes sshd drop Vagrant's connections."""
    if not os.environ.get("SSH_AUTH_SOCK"):
        return passed("no SSH agent to get in the way")
    code, text = _run(["ssh-add", "-l"])
    count = len(text.splitlines()) if code == 0 else 0
    if count > 5:
        return failed(
            f"the SSH agent holds {count} keys (sshd allows 6 tries)",
            "unset SSH_AUTH_SOCK for vagrant, or `ssh-add -D`",
        )
    return passed(f"the SSH agent holds {count} keys")


DIAGNOSES: list[tuple[str, Callable[[Any], CheckResult]]] = [
    ("host.vagrant", vagrant_installed),
    ("host.provider_tool", provider_tool),
    ("host.provider_service", provider_service),
    ("host.virtualisation", virtualisation),
    ("host.memory", memory),
    ("host.networks_conf", networks_conf),
    ("host.node_addresses_free", address_free),
    ("host.disk_space", disk_space),
    ("host.ssh_agent", ssh_agent_keys),
    ("cluster.api_reachable", api_reachable),
]


def diagnose(settings: Any) -> list[CheckResult]:
    """Run every diagnosis on this machine; return a row each."""
    rows = []
    for name, func in DIAGNOSES:
        try:
            row = func(settings)
        except Exception as exc:
            row = failed(f"could not tell: {type(exc).__name__}: {exc}")
        rows.append(CheckResult(name, "host", row.status, row.seen, row.remedy))
    return rows
