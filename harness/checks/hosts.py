"""Host criteria, over SSH on every node: swap, sysctls, cgroup driver, services."""

from __future__ import annotations

import re
from typing import Any

from harness.checks.base import (
    CheckResult,
    Context,
    failed,
    node_check,
    passed,
    skipped,
)

CONTAINERD_CONFIG = "/etc/containerd/config.toml"
KUBELET_CONFIG = "/var/lib/kubelet/config.yaml"
NODE_SERVICES = ("containerd", "kubelet")
NFS_SERVICE = "nfs-server"
# Splits the output of two files read in one command (one round trip).
_SEP = "--minicluster--"


def parse_swaps(proc_swaps: str) -> list[str]:
    """Return the active swap devices of ``/proc/swaps`` (header skipped).

    Input looks like::

        Filename        Type        Size     Used  Priority
        /swap.img       file        2097148  0     -2
    """
    lines = proc_swaps.strip().splitlines()[1:]
    return [line.split()[0] for line in lines if line.strip()]


def parse_fstab_swap(fstab: str) -> list[str]:
    """Return the uncommented swap entries of ``/etc/fstab``."""
    entries = []
    for line in fstab.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 3 and fields[2] == "swap":
            entries.append(fields[0])
    return entries


@node_check(
    "hosts.swap_off",
    remedy="run `swapoff -a` and comment out the swap lines of /etc/fstab "
    "(provision/node.sh does both)",
)
def swap_off(ctx: Context, node: Any) -> CheckResult:
    out = ctx.host(node).check_output(f"cat /proc/swaps; echo {_SEP}; cat /etc/fstab")
    swaps, _, fstab = out.partition(f"{_SEP}\n")
    active, in_fstab = parse_swaps(swaps), parse_fstab_swap(fstab)
    if active and not in_fstab and getattr(ctx.settings, "provider", "") == "docker":
        # A container sees the host's swap and cannot turn it off.
        return skipped(
            f"swap active: {', '.join(active)}: it belongs to the docker host's "
            "kernel, not to this node"
        )
    if active or in_fstab:
        seen = []
        if active:
            seen.append(f"swap active: {', '.join(active)}")
        if in_fstab:
            seen.append(f"swap in /etc/fstab: {', '.join(in_fstab)}")
        return failed("; ".join(seen))
    return passed("no swap active, none in /etc/fstab")


def _sysctl_check(ctx: Context, node: Any, key: str, module: str) -> CheckResult:
    path = "/proc/sys/" + key.replace(".", "/")
    result = ctx.host(node).run(f"cat {path}")
    if not result.ok:
        if module:
            return failed(
                f"{key} does not exist: module {module} not loaded",
                f"run `modprobe {module}` and list it in /etc/modules-load.d/k8s.conf",
            )
        return failed(f"cannot read {path}: {result.stderr.strip()}")
    value = result.stdout.strip()
    if value != "1":
        return failed(f"{key} = {value}")
    return passed(f"{key} = 1")


@node_check(
    "hosts.ip_forward",
    remedy="run `sysctl -w net.ipv4.ip_forward=1` and set it in /etc/sysctl.d/k8s.conf",
)
def ip_forward(ctx: Context, node: Any) -> CheckResult:
    return _sysctl_check(ctx, node, "net.ipv4.ip_forward", "")


@node_check(
    "hosts.bridge_nf_call_iptables",
    remedy="run `sysctl -w net.bridge.bridge-nf-call-iptables=1` and set it in "
    "/etc/sysctl.d/k8s.conf",
)
def bridge_nf_call_iptables(ctx: Context, node: Any) -> CheckResult:
    return _sysctl_check(
        ctx, node, "net.bridge.bridge-nf-call-iptables", "br_netfilter"
    )


_SYSTEMD_CGROUP = re.compile(r"^\s*SystemdCgroup\s*=\s*(true|false)\s*$", re.M)
_KUBELET_DRIVER = re.compile(r"^cgroupDriver:\s*[\"']?(\w+)[\"']?\s*$", re.M)


def parse_containerd_cgroup(config_toml: str) -> str:
    """Return runc's cgroup driver in containerd's config: systemd or cgroupfs.

    containerd 1.x and 2.x both write, under the runc runtime's options::

        SystemdCgroup = true
    """
    values = _SYSTEMD_CGROUP.findall(config_toml)
    # The last one wins, as TOML readers of a repeated table would have it.
    return "systemd" if values and values[-1] == "true" else "cgroupfs"


def parse_kubelet_cgroup(config_yaml: str) -> str:
    """Return the kubelet config's ``cgroupDriver``; its default is cgroupfs."""
    match = _KUBELET_DRIVER.search(config_yaml)
    return match.group(1) if match else "cgroupfs"


@node_check(
    "hosts.cgroup_driver",
    remedy="set `SystemdCgroup = true` in /etc/containerd/config.toml and "
    "`cgroupDriver: systemd` in /var/lib/kubelet/config.yaml, then restart both",
)
def cgroup_driver(ctx: Context, node: Any) -> CheckResult:
    out = ctx.host(node).check_output(
        f"for f in {CONTAINERD_CONFIG} {KUBELET_CONFIG}; do "
        f'cat "$f" 2>/dev/null || echo "missing $f"; echo {_SEP}; done'
    )
    containerd, kubelet, _ = out.split(f"{_SEP}\n", 2)
    missing = [
        path
        for path, text in ((CONTAINERD_CONFIG, containerd), (KUBELET_CONFIG, kubelet))
        if text.strip() == f"missing {path}"
    ]
    if missing:
        return failed(
            f"missing {', '.join(missing)}",
            "run provision/node.sh (containerd) and kubeadm init/join (kubelet)",
        )
    runtime = parse_containerd_cgroup(containerd)
    kubelet_driver = parse_kubelet_cgroup(kubelet)
    seen = f"containerd: {runtime}, kubelet: {kubelet_driver}"
    if runtime == kubelet_driver == "systemd":
        return passed(seen)
    return failed(seen)


# Where systemd manages the node (VMs, docker nodes) ask it; elsewhere a
# service counts as active when its process runs.
_SERVICE_STATE = (
    'for unit in {units}; do printf "%s " "$unit"; '
    'if [ -d /run/systemd/system ]; then systemctl is-active "$unit" || :; '
    'elif pgrep -x "$unit" >/dev/null; then echo active; '
    "else echo inactive; fi; done"
)


def parse_service_states(text: str) -> dict[str, str]:
    """Return ``{"containerd": "active", "kubelet": "activating"}`` from the probe."""
    states = {}
    for line in text.splitlines():
        unit, _, state = line.strip().partition(" ")
        if unit:
            states[unit] = state.strip() or "unknown"
    return states


def service_states(ctx: Context, node: Any, units: tuple[str, ...]) -> dict[str, str]:
    """Return the state of each unit on the node (``active`` when running)."""
    out = ctx.host(node).check_output(_SERVICE_STATE.format(units=" ".join(units)))
    return parse_service_states(out)


@node_check(
    "hosts.services_active",
    remedy="start them: `systemctl enable --now containerd kubelet`; "
    "`journalctl -u kubelet -n 50` says why kubelet stops",
)
def services_active(ctx: Context, node: Any) -> CheckResult:
    states = service_states(ctx, node, NODE_SERVICES)
    seen = ", ".join(f"{unit} {states.get(unit, 'unknown')}" for unit in NODE_SERVICES)
    if all(states.get(unit) == "active" for unit in NODE_SERVICES):
        return passed(seen)
    return failed(seen)


def _nfs_server_nodes(ctx: Context) -> list[Any]:
    server = ctx.settings.nfs.server
    return [node for node in ctx.nodes if node.name == server]


@node_check(
    "hosts.nfs_server_active",
    remedy="run provision/nfs-server.sh on the NFS server node, then "
    "`systemctl status nfs-server`",
    nodes=_nfs_server_nodes,
)
def nfs_server_active(ctx: Context, node: Any) -> CheckResult:
    state = service_states(ctx, node, (NFS_SERVICE,)).get(NFS_SERVICE, "unknown")
    if state == "active":
        return passed(f"{NFS_SERVICE} active")
    filesystems = ctx.host(node).check_output("cat /proc/filesystems")
    if not re.search(r"\bnfsd\b", filesystems):
        return skipped(
            f"{NFS_SERVICE} {state}: this kernel has no nfsd, so no NFS server "
            "can run on it"
        )
    return failed(f"{NFS_SERVICE} {state}")
