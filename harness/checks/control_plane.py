"""Control-plane criteria: the API server ready, etcd healthy, CoreDNS answering."""

from __future__ import annotations

import ipaddress

from harness.checks.base import CheckResult, Context, cluster_check, failed, passed
from harness.checks.probes import DEMO_NAMESPACE, DEMO_SELECTOR
from harness.kube import parse_pod, parse_readyz

# Every cluster's own Service, at the first address of the service CIDR.
KUBERNETES_SERVICE = "kubernetes.default.svc.cluster.local"


@cluster_check(
    "control_plane.apiserver_ready",
    remedy="on the control plane, `crictl ps -a --name kube-apiserver` and "
    "`crictl logs` of it say why it is not ready",
)
def apiserver_ready(ctx: Context) -> list[CheckResult]:
    status, body = ctx.kube.get_raw("/readyz")
    if status == 200 and body.strip() == "ok":
        return [passed(f"/readyz: HTTP 200 {body.strip()}")]
    return [failed(f"/readyz: HTTP {status} {body.strip()[:200]}")]


@cluster_check(
    "control_plane.etcd_healthy",
    remedy="on the control plane, `crictl logs` of the etcd container; a full "
    "disk or a changed node address are the usual causes",
)
def etcd_healthy(ctx: Context) -> list[CheckResult]:
    status, body = ctx.kube.get_raw("/readyz?verbose")
    checks = parse_readyz(body)
    if "etcd" not in checks:
        return [failed(f"/readyz?verbose (HTTP {status}) lists no etcd check")]
    if checks["etcd"]:
        return [passed("/readyz?verbose: [+]etcd ok")]
    return [failed("/readyz?verbose: [-]etcd failed")]


def kubernetes_service_ip(service_cidr: str) -> str:
    """Return the ClusterIP of the ``kubernetes`` Service: the CIDR's first host."""
    return str(ipaddress.ip_network(service_cidr)[1])


@cluster_check(
    "control_plane.coredns",
    remedy="`kubectl -n kube-system get pods -l k8s-app=kube-dns`; CoreDNS stays "
    "Pending until the pod network (Flannel) is up",
)
def coredns(ctx: Context) -> list[CheckResult]:
    pods = [parse_pod(p) for p in ctx.kube.pods(DEMO_NAMESPACE, DEMO_SELECTOR)]
    ready = [pod for pod in pods if pod.ready]
    if not ready:
        return [
            failed(
                f"no Ready pod ({DEMO_SELECTOR}) in {DEMO_NAMESPACE} to resolve from",
                "run provision/nginx-demo.sh (the demo pods are the probes)",
            )
        ]
    pod = ready[0]
    result = ctx.kube.exec(
        pod.namespace, pod.name, ["getent", "hosts", KUBERNETES_SERVICE]
    )
    want = kubernetes_service_ip(ctx.settings.service_cidr)
    answer = result.stdout.split()[0] if result.stdout.split() else ""
    if result.ok and answer == want:
        return [passed(f"{KUBERNETES_SERVICE} -> {answer} from pod {pod.name}")]
    seen = answer or (result.stderr.strip() or f"exit {result.exited}")
    return [failed(f"{KUBERNETES_SERVICE} from pod {pod.name}: {seen}; want {want}")]
