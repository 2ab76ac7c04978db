"""The host checks against real SSH hosts: pass when healthy, fail on a real fault."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.checks import CheckResult, Context, load_all, run_checks, select
from harness.errors import CommandFailed, WaitTimeout
from harness.remote import Host
from harness.report import table
from harness.wait import until
from tests.integration.lab import Lab

# Everything that needs no Kubernetes API.
HOST_SIDE = "hosts or flannel_iface or node_port"

Fault = Callable[[str, str, str], None]


def verify(ctx: Context, expr: str = HOST_SIDE) -> list[CheckResult]:
    return run_checks(ctx, select(expr, load_all().values()))


def by_node(rows: list[CheckResult], check: str) -> dict[str, CheckResult]:
    return {r.node: r for r in rows if r.name == check}


@pytest.fixture
def fault(root_on: dict[str, Host]) -> Iterator[Fault]:
    """Make a fault on one host with a shell command; undo it afterwards."""
    undo: list[tuple[str, str]] = []

    def make(node: str, command: str, revert: str) -> None:
        undo.append((node, revert))
        root_on[node].check_output(command)

    yield make
    for node, revert in reversed(undo):
        root_on[node].check_output(revert)


def test_healthy_hosts_pass(ctx: Context) -> None:
    rows = verify(ctx)
    assert {r.node for r in rows} == {"control-plane", "worker-1", "worker-2"}
    assert not [r for r in rows if r.failed], table(rows)


def test_nfs_server_skips_on_a_kernel_without_nfsd(ctx: Context) -> None:
    filesystems = ctx.host("control-plane").check_output("cat /proc/filesystems")
    if "nfsd" in filesystems.split():
        pytest.skip("this kernel has nfsd: the skip path cannot be shown here")
    rows = by_node(verify(ctx, "nfs_server"), "hosts.nfs_server_active")
    # Only the NFS server node is asked, and it skips instead of passing.
    assert list(rows) == ["control-plane"]
    assert rows["control-plane"].skipped
    assert "no nfsd" in rows["control-plane"].seen


def _dir(lab: Lab, node: str) -> str:
    return str(lab.host(node).dir)


CONTAINERD = "/etc/containerd/config.toml"
KUBELET = "/var/lib/kubelet/config.yaml"
# /etc/fstab is a bind-mounted file: rewrite it in place (sed -i would rename).
DROP_SWAP = (
    "grep -v '^/swapfile' /etc/fstab > /tmp/fstab.$$; cat /tmp/fstab.$$ > /etc/fstab"
)


@pytest.mark.parametrize(
    ("check", "node", "command", "revert", "seen"),
    [
        pytest.param(
            "hosts.services_active",
            "worker-1",
            "pkill -x kubelet",
            "setsid -f {dir}/bin/kubelet infinity </dev/null >/dev/null 2>&1",
            "kubelet inactive",
            id="service-stopped",
        ),
        pytest.param(
            "hosts.services_active",
            "control-plane",
            "pkill -x containerd",
            "setsid -f {dir}/bin/containerd infinity </dev/null >/dev/null 2>&1",
            "containerd inactive",
            id="containerd-stopped",
        ),
        pytest.param(
            "hosts.ip_forward",
            "worker-2",
            "sysctl -qw net.ipv4.ip_forward=0",
            "sysctl -qw net.ipv4.ip_forward=1",
            "net.ipv4.ip_forward = 0",
            id="sysctl-flipped",
        ),
        pytest.param(
            "hosts.bridge_nf_call_iptables",
            "control-plane",
            "sysctl -qw net.bridge.bridge-nf-call-iptables=0",
            "sysctl -qw net.bridge.bridge-nf-call-iptables=1",
            "net.bridge.bridge-nf-call-iptables = 0",
            id="bridge-nf-off",
        ),
        pytest.param(
            "hosts.cgroup_driver",
            "worker-1",
            f"sed -i 's/SystemdCgroup = true/SystemdCgroup = false/' {CONTAINERD}",
            f"sed -i 's/SystemdCgroup = false/SystemdCgroup = true/' {CONTAINERD}",
            "containerd: cgroupfs, kubelet: systemd",
            id="containerd-cgroupfs",
        ),
        pytest.param(
            "hosts.cgroup_driver",
            "worker-2",
            f"sed -i 's/cgroupDriver: systemd/cgroupDriver: cgroupfs/' {KUBELET}",
            f"sed -i 's/cgroupDriver: cgroupfs/cgroupDriver: systemd/' {KUBELET}",
            "containerd: systemd, kubelet: cgroupfs",
            id="kubelet-cgroupfs",
        ),
        pytest.param(
            "hosts.swap_off",
            "worker-2",
            "echo '/swapfile none swap sw 0 0' >> /etc/fstab",
            DROP_SWAP,
            "swap in /etc/fstab: /swapfile",
            id="swap-in-fstab",
        ),
        pytest.param(
            "network.flannel_iface",
            "worker-1",
            "ip link del flannel.1 && ip link add flannel.1 type vxlan id 1 "
            "local 127.0.0.1 dev lo dstport 8472",
            "ip link del flannel.1 && ip link add flannel.1 type vxlan id 1 "
            "local {address} dev eth1 dstport 8472",
            "flannel.1 vxlan local 127.0.0.1 dev lo",
            id="flannel-wrong-interface",
        ),
        pytest.param(
            "network.flannel_iface",
            "control-plane",
            "ip link del flannel.1",
            "ip link add flannel.1 type vxlan id 1 local {address} dev eth1 "
            "dstport 8472",
            "no flannel.1 device",
            id="flannel-missing",
        ),
        pytest.param(
            "nginx.node_port",
            "worker-2",
            "nginx -c {dir}/nginx.conf -s stop",
            "nginx -c {dir}/nginx.conf </dev/null >/dev/null 2>&1",
            "no answer",
            id="port-closed",
        ),
    ],
)
def test_fault_fails_on_that_host_only(
    lab: Lab,
    ctx: Context,
    fault: Fault,
    check: str,
    node: str,
    command: str,
    revert: str,
    seen: str,
) -> None:
    before = by_node(verify(ctx, check), check)
    assert all(r.passed for r in before.values()), table(list(before.values()))

    values = {"dir": _dir(lab, node), "address": lab.host(node).address}
    fault(node, command.format(**values), revert.format(**values))

    after = by_node(verify(ctx, check), check)
    assert after[node].failed, table(list(after.values()))
    assert seen in after[node].seen
    assert after[node].remedy
    others = [r for name, r in after.items() if name != node]
    assert others
    assert all(r.passed for r in others), table(others)


def test_unreachable_host_fails_naming_it(lab: Lab, ctx: Context) -> None:
    # A real refused connection: nothing listens on port 2222 of worker-1.
    worker = lab.host("worker-1")
    hosts = dict(ctx.hosts)
    hosts["worker-1"] = Host("worker-1", worker.address, 2222, "root", str(lab.key))
    rows = by_node(verify(Context(ctx.settings, hosts), "swap"), "hosts.swap_off")
    assert rows["worker-1"].failed
    assert "cannot reach worker-1 over SSH" in rows["worker-1"].seen
    assert f"{worker.address}:2222" in rows["worker-1"].seen
    assert rows["worker-2"].passed


def test_wrong_key_fails_naming_the_host(
    lab: Lab, ctx: Context, tmp_path: Path
) -> None:
    other = tmp_path / "other_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True
    )
    address = lab.host("worker-2").address
    hosts = {**ctx.hosts, "worker-2": Host("worker-2", address, 22, "root", str(other))}
    rows = by_node(verify(Context(ctx.settings, hosts), "swap"), "hosts.swap_off")
    assert rows["worker-2"].failed
    assert "cannot reach worker-2" in rows["worker-2"].seen


def test_command_failed_names_host_command_code_and_output(ctx: Context) -> None:
    with pytest.raises(CommandFailed) as info:
        ctx.host("worker-2").check_output("echo seen-out; echo seen-err >&2; exit 3")
    text = str(info.value)
    assert "on worker-2 exited 3" in text
    assert "seen-out" in text
    assert "seen-err" in text


def test_wait_logs_each_try_then_succeeds(
    lab: Lab, ctx: Context, fault: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    restart = f"setsid -f {_dir(lab, 'worker-1')}/bin/kubelet infinity"
    fault("worker-1", "pkill -x kubelet", ":")
    # The service comes back by itself a little later, as a restarting unit does.
    ctx.host("worker-1").check_output(
        f"setsid -f sh -c 'sleep 1.5; {restart}' </dev/null >/dev/null 2>&1"
    )
    check = load_all()["hosts.services_active"]

    def probe() -> tuple[bool, str]:
        row = by_node(run_checks(ctx, [check]), check.name)["worker-1"]
        return row.passed, f"{row.node}: {row.seen}"

    caplog.set_level(logging.INFO, logger="harness.wait")
    seen = until("kubelet on worker-1", probe, timeout_s=15, interval_s=0.5)
    assert seen == "worker-1: containerd active, kubelet active"
    assert "try 1, worker-1: containerd active, kubelet inactive" in caplog.text


def test_wait_gives_up_with_the_last_state(ctx: Context, fault: Fault) -> None:
    fault(
        "worker-2",
        "sysctl -qw net.ipv4.ip_forward=0",
        "sysctl -qw net.ipv4.ip_forward=1",
    )
    check = load_all()["hosts.ip_forward"]

    def probe() -> tuple[bool, str]:
        row = by_node(run_checks(ctx, [check]), check.name)["worker-2"]
        return row.passed, f"worker-2: {row.seen}"

    with pytest.raises(WaitTimeout) as info:
        until("ip_forward on worker-2", probe, timeout_s=1.5, interval_s=0.5)
    assert "last seen: worker-2: net.ipv4.ip_forward = 0" in str(info.value)
    assert info.value.tries >= 2


def test_parallel_and_serial_agree(ctx: Context) -> None:
    checks = select(HOST_SIDE, load_all().values())
    parallel = run_checks(ctx, checks, parallel=True)
    serial = run_checks(ctx, checks, parallel=False)
    strip = [(r.name, r.node, r.status, r.seen) for r in parallel]
    assert strip == [(r.name, r.node, r.status, r.seen) for r in serial]
