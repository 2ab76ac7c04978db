"""Node criteria, from the API: registered, Ready, role, InternalIP, kubelet version."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.checks.base import CheckResult, Context, cluster_check, failed, passed
from harness.kube import NodeInfo, parse_node

CONTROL_PLANE = "control-plane"


def registered_nodes(ctx: Context) -> dict[str, NodeInfo]:
    """Return the nodes the API server knows, by name."""
    return {info.name: info for info in map(parse_node, ctx.kube.nodes())}


def _per_node(
    ctx: Context, judge: Callable[[Any, NodeInfo], CheckResult]
) -> list[CheckResult]:
    """Judge each node of the settings against its Node object."""
    known = registered_nodes(ctx)
    rows = []
    for node in ctx.nodes:
        info = known.get(node.name)
        if info is None:
            row = failed(
                f"not registered (the API knows: {', '.join(sorted(known)) or 'none'})",
                f"see `journalctl -u kubelet` on {node.name}; re-run its join with "
                f"`vagrant provision {node.name} --provision-with join.sh`",
                node=node.name,
            )
        else:
            row = judge(node, info)
        rows.append(row if row.node else _on(row, node.name))
    return rows


def _on(row: CheckResult, node: str) -> CheckResult:
    return CheckResult(row.name, node, row.status, row.seen, row.remedy)


@cluster_check(
    "nodes.registered",
    remedy="check the kubelet on that node: `journalctl -u kubelet -n 50`",
)
def registered(ctx: Context) -> list[CheckResult]:
    return _per_node(ctx, lambda node, info: passed(f"registered as {info.name}"))


@cluster_check(
    "nodes.ready",
    remedy="see `kubectl describe node NAME`; NotReady with NetworkPluginNotReady "
    "means Flannel is not running there",
)
def ready(ctx: Context) -> list[CheckResult]:
    def judge(node: Any, info: NodeInfo) -> CheckResult:
        if info.is_ready:
            return passed("Ready")
        reason = f" ({info.ready_reason})" if info.ready_reason else ""
        return failed(f"Ready={info.ready}{reason}")

    return _per_node(ctx, judge)


@cluster_check(
    "nodes.role",
    remedy="the control plane comes from `kubeadm init`, workers from "
    "`kubeadm join`; recreate the node with the right provisioner",
)
def role(ctx: Context) -> list[CheckResult]:
    def judge(node: Any, info: NodeInfo) -> CheckResult:
        roles = ", ".join(info.roles) or "none"
        is_cp = CONTROL_PLANE in info.roles
        if is_cp == (node.role == CONTROL_PLANE):
            return passed(f"roles: {roles}")
        return failed(f"roles: {roles}; expected {node.role}")

    return _per_node(ctx, judge)


@cluster_check(
    "nodes.internal_ip",
    remedy="set the kubelet's --node-ip to the private address "
    "(KUBELET_EXTRA_ARGS in /etc/default/kubelet) and restart the kubelet",
)
def internal_ip(ctx: Context) -> list[CheckResult]:
    def judge(node: Any, info: NodeInfo) -> CheckResult:
        if info.internal_ip == node.address:
            return passed(f"InternalIP {info.internal_ip}")
        return failed(
            f"InternalIP {info.internal_ip or 'none'}, private address {node.address}"
        )

    return _per_node(ctx, judge)


@cluster_check(
    "nodes.kubelet_version",
    remedy="install the pinned kubelet (kubernetes.version in cluster.yaml) and "
    "hold it: `apt-mark hold kubelet`",
)
def kubelet_version(ctx: Context) -> list[CheckResult]:
    want = "v" + str(ctx.settings.kubernetes_version).lstrip("v")

    def judge(node: Any, info: NodeInfo) -> CheckResult:
        if info.kubelet_version == want:
            return passed(f"kubelet {info.kubelet_version}")
        return failed(f"kubelet {info.kubelet_version or 'unknown'}, pinned {want}")

    return _per_node(ctx, judge)
