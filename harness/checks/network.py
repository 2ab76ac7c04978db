"""Pod-network criteria: pod to pod across workers by IP; Flannel on the private NIC."""

from __future__ import annotations

import re
from typing import Any

from harness.checks.base import (
    CheckResult,
    Context,
    cluster_check,
    failed,
    node_check,
    passed,
)
from harness.checks.probes import (
    DEMO_NAMESPACE,
    DEMO_SELECTOR,
    describe_http,
    http_probe_argv,
    parse_http_probe,
)
from harness.kube import PodInfo, parse_pod

FLANNEL_DEVICE = "flannel.1"

_VXLAN = re.compile(
    r"\bvxlan id (?P<vni>\d+)(?: local (?P<local>\S+))?(?: dev (?P<dev>\S+))?"
)


def parse_vxlan(ip_link: str) -> dict[str, str]:
    """Return the VXLAN id, local address and device of ``ip -d -o link show``.

    Input looks like (one line)::

        5: flannel.1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 ... \\
            vxlan id 1 local 192.168.56.11 dev eth1 srcport 0 0 dstport 8472 ...
    """
    match = _VXLAN.search(ip_link)
    if not match:
        return {}
    return {k: v for k, v in match.groupdict().items() if v}


@node_check(
    "network.flannel_iface",
    remedy="start flanneld with --iface=<the private interface> (or "
    "--iface-regex of the node address) in kube-flannel's DaemonSet",
)
def flannel_iface(ctx: Context, node: Any) -> CheckResult:
    result = ctx.host(node).run(f"ip -d -o link show {FLANNEL_DEVICE}")
    if not result.ok:
        return failed(
            f"no {FLANNEL_DEVICE} device: Flannel is not running on this node",
            "`kubectl -n kube-flannel get pods -o wide`; a crash-looping pod's "
            "logs say why",
        )
    vxlan = parse_vxlan(result.stdout)
    local, dev = vxlan.get("local", "none"), vxlan.get("dev", "?")
    seen = f"{FLANNEL_DEVICE} vxlan local {local} dev {dev}"
    if local == node.address:
        return passed(seen)
    return failed(f"{seen}; private address {node.address}")


def demo_pods_by_node(ctx: Context) -> dict[str, PodInfo]:
    """Return one Ready demo pod per node it runs on."""
    pods: dict[str, PodInfo] = {}
    for obj in ctx.kube.pods(DEMO_NAMESPACE, DEMO_SELECTOR):
        pod = parse_pod(obj)
        if pod.ready and pod.ip:
            pods.setdefault(pod.node, pod)
    return pods


@cluster_check(
    "network.pod_to_pod",
    remedy="on both workers `ip route` must list the other's pod subnet via "
    f"{FLANNEL_DEVICE}; check the Flannel pods and that UDP 8472 passes between nodes",
)
def pod_to_pod(ctx: Context) -> list[CheckResult]:
    workers = [n.name for n in ctx.nodes if n.role != "control-plane"]
    pods = demo_pods_by_node(ctx)
    placed = [name for name in workers if name in pods]
    if len(placed) < 2:
        return [
            failed(
                f"need Ready demo pods on two workers; found them on "
                f"{', '.join(placed) or 'none'} of {', '.join(workers)}",
                "run provision/nginx-demo.sh; `kubectl get pods -o wide` shows where "
                "the pods went",
            )
        ]
    rows = []
    # Each worker's pod asks the next worker's pod, so every pair is tried once
    # in one direction around the ring.
    for i, source_node in enumerate(placed):
        target = pods[placed[(i + 1) % len(placed)]]
        source = pods[source_node]
        result = ctx.kube.exec(
            source.namespace,
            source.name,
            http_probe_argv(target.ip, 80, int(ctx.probe_timeout_s)),
            timeout_s=ctx.probe_timeout_s + 5,
        )
        code, body = parse_http_probe(result)
        seen = (
            f"pod {source.name} ({source_node}) -> {target.ip} "
            f"({target.node}): {describe_http(code, body, result)}"
        )
        rows.append(
            passed(seen, source_node) if code == 200 else failed(seen, node=source_node)
        )
    return rows
