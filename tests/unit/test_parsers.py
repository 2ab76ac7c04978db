"""Parsers of node state, fed output captured on real machines (see data/SOURCES.md)."""

from __future__ import annotations

import pytest

from harness.checks.hosts import (
    parse_containerd_cgroup,
    parse_fstab_swap,
    parse_kubelet_cgroup,
    parse_service_states,
    parse_swaps,
)
from harness.checks.network import parse_vxlan
from harness.kube import parse_node, parse_pod, parse_readyz
from tests.unit.fakes import data, items

SWAPS_ON = (
    "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
    "/swap.img                               file\t\t2097148\t\t0\t\t-2\n"
)


@pytest.mark.parametrize(
    ("text", "active"),
    [
        (data("proc-swaps-none.txt"), []),  # captured: header only
        (SWAPS_ON, ["/swap.img"]),  # an Ubuntu box before node.sh
    ],
)
def test_parse_swaps(text: str, active: list[str]) -> None:
    assert parse_swaps(text) == active


@pytest.mark.parametrize(
    ("fstab", "entries"),
    [
        ("/swap.img\tnone\tswap\tsw\t0\t0\n", ["/swap.img"]),
        ("#/swap.img none swap sw 0 0\n", []),  # commented out by node.sh
        ("UUID=1 / ext4 defaults 0 1\n", []),
        ("/dev/sdb2 none swap sw # second disk\n", ["/dev/sdb2"]),
    ],
)
def test_parse_fstab_swap(fstab: str, entries: list[str]) -> None:
    assert parse_fstab_swap(fstab) == entries


def test_containerd_default_config_is_cgroupfs() -> None:
    # containerd's own default: node.sh must flip it.
    assert (
        parse_containerd_cgroup(data("containerd-config-default-1.6.toml"))
        == "cgroupfs"
    )


def test_containerd_flipped_config_is_systemd() -> None:
    text = data("containerd-config-default-1.6.toml").replace(
        "SystemdCgroup = false", "SystemdCgroup = true"
    )
    assert parse_containerd_cgroup(text) == "systemd"


@pytest.mark.parametrize(
    ("text", "driver"),
    [
        (data("kubelet-config.yaml"), "systemd"),
        ("kind: KubeletConfiguration\n", "cgroupfs"),  # unset: the kubelet's default
        ('cgroupDriver: "cgroupfs"\n', "cgroupfs"),
    ],
)
def test_parse_kubelet_cgroup(text: str, driver: str) -> None:
    assert parse_kubelet_cgroup(text) == driver


def test_parse_service_states() -> None:
    text = "containerd active\nkubelet activating\nnfs-server \n"
    assert parse_service_states(text) == {
        "containerd": "active",
        "kubelet": "activating",
        "nfs-server": "unknown",  # systemctl printed nothing
    }


def test_parse_vxlan_captured() -> None:
    assert parse_vxlan(data("ip-link-flannel.txt")) == {
        "vni": "1",
        "local": "192.168.56.11",
        "dev": "eth1",
    }


def test_parse_vxlan_not_vxlan() -> None:
    assert parse_vxlan("2: eth1: <BROADCAST,UP> mtu 1500 ... link/ether ...") == {}


def test_parse_nodes_healthy() -> None:
    nodes = {n.name: n for n in map(parse_node, items("nodes-healthy.json"))}
    assert nodes["control-plane"].roles == ("control-plane",)
    assert nodes["worker-1"].roles == ()
    assert nodes["worker-2"].internal_ip == "192.168.56.12"
    assert all(n.is_ready and n.kubelet_version == "v1.36.3" for n in nodes.values())


def test_parse_node_not_ready_keeps_the_reason() -> None:
    worker = parse_node(items("nodes-broken.json")[2])
    assert not worker.is_ready
    assert worker.ready == "False"
    assert worker.ready_reason == "KubeletNotReady"


def test_parse_node_without_status() -> None:
    # A Node object just created by the kubelet has no conditions yet.
    info = parse_node({"metadata": {"name": "worker-3"}})
    assert (info.ready, info.internal_ip, info.kubelet_version) == ("Unknown", "", "")


def test_parse_readyz() -> None:
    healthy = parse_readyz(data("readyz-verbose.txt"))
    assert healthy["etcd"] is True
    assert healthy["etcd-readiness"] is True
    assert len(healthy) == 22
    assert parse_readyz(data("readyz-verbose-etcd-down.txt"))["etcd"] is False


def test_parse_pod() -> None:
    pods = [parse_pod(p) for p in items("pods-nginx-one-worker.json")]
    assert [(p.node, p.ready) for p in pods] == [
        ("worker-1", True),
        ("worker-1", True),
        ("worker-2", False),
    ]
    assert pods[2].ip == ""
