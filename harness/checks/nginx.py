"""Nginx criteria: the demo on both workers; its NodePort and ClusterIP answer."""

from __future__ import annotations

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
    DEMO_NAME,
    DEMO_NAMESPACE,
    DEMO_SELECTOR,
    EXPECTED_PAGE,
    describe_http,
    http_get,
    http_probe_argv,
    parse_http_probe,
)
from harness.kube import parse_pod


@cluster_check(
    "nginx.deployment_available",
    remedy="`kubectl describe deployment nginx`; pods stuck in ImagePullBackOff "
    "mean the image is neither reachable nor in the bundle",
)
def deployment_available(ctx: Context) -> list[CheckResult]:
    status = ctx.kube.deployment(DEMO_NAMESPACE, DEMO_NAME).get("status", {})
    want = ctx.settings.nginx.replicas
    available = status.get("availableReplicas") or 0
    pods = [parse_pod(p) for p in ctx.kube.pods(DEMO_NAMESPACE, DEMO_SELECTOR)]
    on = sorted({pod.node for pod in pods if pod.ready})
    workers = [n.name for n in ctx.nodes if n.role != "control-plane"]
    missing = [name for name in workers if name not in on]
    seen = f"{available}/{want} available, Ready on {', '.join(on) or 'no node'}"
    if available >= want and not missing:
        return [passed(seen)]
    if available >= want:
        return [
            failed(
                f"{seen}; none on {', '.join(missing)}",
                "spread the replicas with a topologySpreadConstraint on "
                "kubernetes.io/hostname, and give at least one replica per worker",
            )
        ]
    return [failed(seen)]


def node_url(ctx: Context, node: Any) -> str:
    """Return the NodePort URL of ``node`` as this machine reaches it."""
    base = ctx.node_urls.get(node.name) or f"http://{node.address}:"
    return f"{base}{ctx.settings.nginx.node_port}/"


@node_check(
    "nginx.node_port",
    remedy="`kubectl get svc nginx` must show the NodePort; kube-proxy must run "
    "on that node (`kubectl -n kube-system get pods -l k8s-app=kube-proxy -o wide`)",
    needs=("http",),
)
def node_port(ctx: Context, node: Any) -> CheckResult:
    url = node_url(ctx, node)
    code, body = http_get(url, ctx.probe_timeout_s)
    if code == 0:
        return failed(f"GET {url}: no answer ({body})")
    seen = f"GET {url}: {describe_http(code, body)}"
    if code == 200 and EXPECTED_PAGE in body:
        return passed(seen)
    return failed(seen)


@cluster_check(
    "nginx.cluster_ip",
    remedy="`kubectl get endpointslices -l kubernetes.io/service-name=nginx` "
    "must list the pods; kube-proxy's logs say why the ClusterIP does not route",
)
def cluster_ip(ctx: Context) -> list[CheckResult]:
    spec = ctx.kube.service(DEMO_NAMESPACE, DEMO_NAME).get("spec", {})
    ip, ports = spec.get("clusterIP", ""), spec.get("ports") or []
    if not ip or ip == "None" or not ports:
        return [failed(f"service {DEMO_NAME} has no ClusterIP/port: {ip} {ports}")]
    port = int(ports[0]["port"])
    pods = [parse_pod(p) for p in ctx.kube.pods(DEMO_NAMESPACE, DEMO_SELECTOR)]
    ready = [pod for pod in pods if pod.ready]
    if not ready:
        return [failed(f"no Ready pod ({DEMO_SELECTOR}) to ask {ip}:{port} from")]
    pod = ready[0]
    result = ctx.kube.exec(
        pod.namespace,
        pod.name,
        http_probe_argv(ip, port, int(ctx.probe_timeout_s)),
        timeout_s=ctx.probe_timeout_s + 5,
    )
    code, body = parse_http_probe(result)
    seen = f"pod {pod.name} -> {ip}:{port}: {describe_http(code, body, result)}"
    if code == 200 and EXPECTED_PAGE in body:
        return [passed(seen)]
    return [failed(seen)]
