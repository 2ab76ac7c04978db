"""The API-facing checks on captured objects: healthy rows pass, broken ones fail."""

from __future__ import annotations

import json

import pytest

from harness.checks import Context, load_all, run_checks, select
from harness.checks.probes import http_probe_argv, parse_http_probe
from harness.errors import Result
from tests.unit.fakes import FakeKube, FakeSettings, data, items

NGINX_PAGE = "<h1>MiniCluster</h1>\nHTTP-STATUS 200\n"


def ctx_of(kube: FakeKube) -> Context:
    return Context(FakeSettings(), {}, kube_factory=lambda: kube)  # type: ignore[arg-type,return-value]


def rows_of(kube: FakeKube, expr: str) -> dict[tuple[str, str], str]:
    rows = run_checks(ctx_of(kube), select(expr, load_all().values()))
    return {(r.name, r.node): r.status for r in rows}


def test_nodes_healthy(fake_kube: FakeKube) -> None:
    rows = rows_of(fake_kube, "nodes")
    assert len(rows) == 15  # 5 checks x 3 nodes
    assert set(rows.values()) == {"pass"}


def test_nodes_broken_fail_on_the_right_node(fake_kube: FakeKube) -> None:
    fake_kube.node_items = items("nodes-broken.json")
    rows = run_checks(ctx_of(fake_kube), select("nodes", load_all().values()))
    failed = {(r.name, r.node): r.seen for r in rows if r.failed}
    assert failed == {
        ("nodes.ready", "worker-2"): "Ready=False (KubeletNotReady)",
        (
            "nodes.internal_ip",
            "worker-1",
        ): "InternalIP 10.0.2.15, private address 192.168.56.11",
        ("nodes.kubelet_version", "worker-1"): "kubelet v1.36.2, pinned v1.36.3",
    }
    assert all(r.remedy for r in rows if r.failed)


def test_node_not_registered(fake_kube: FakeKube) -> None:
    fake_kube.node_items = items("nodes-healthy.json")[:2]
    rows = run_checks(
        ctx_of(fake_kube), select("nodes.registered", load_all().values())
    )
    worker2 = next(r for r in rows if r.node == "worker-2")
    assert worker2.failed
    assert "not registered" in worker2.seen
    assert "vagrant provision worker-2" in worker2.remedy


def test_worker_with_control_plane_role_fails(fake_kube: FakeKube) -> None:
    nodes = items("nodes-healthy.json")
    nodes[1]["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] = ""
    fake_kube.node_items = nodes
    assert rows_of(fake_kube, "nodes.role")[("nodes.role", "worker-1")] == "fail"


def test_control_plane_healthy(fake_kube: FakeKube) -> None:
    fake_kube.exec_results[("nginx-6d8f7b9c5-4xk2p", "getent")] = Result(
        "pod", "getent", 0, "10.96.0.1       kubernetes.default.svc.cluster.local\n", ""
    )
    assert set(rows_of(fake_kube, "control_plane").values()) == {"pass"}


def test_etcd_down_fails(fake_kube: FakeKube) -> None:
    fake_kube.readyz["/readyz?verbose"] = (500, data("readyz-verbose-etcd-down.txt"))
    fake_kube.readyz["/readyz"] = (500, "readyz check failed")
    rows = rows_of(fake_kube, "apiserver or etcd")
    assert rows[("control_plane.etcd_healthy", "cluster")] == "fail"
    assert rows[("control_plane.apiserver_ready", "cluster")] == "fail"


def test_coredns_not_answering_fails(fake_kube: FakeKube) -> None:
    fake_kube.exec_results[("nginx-6d8f7b9c5-4xk2p", "getent")] = Result(
        "pod", "getent", 2, "", ""
    )
    assert rows_of(fake_kube, "coredns")[("control_plane.coredns", "cluster")] == "fail"


def test_pod_to_pod_asks_across_workers(fake_kube: FakeKube) -> None:
    fake_kube.exec_results[("nginx-6d8f7b9c5-4xk2p", "bash")] = Result(
        "pod", "bash", 0, NGINX_PAGE, ""
    )
    fake_kube.exec_results[("nginx-6d8f7b9c5-9vq7d", "bash")] = Result(
        "pod", "bash", 7, "", "bash: connect: No route to host"
    )
    rows = run_checks(ctx_of(fake_kube), select("pod_to_pod", load_all().values()))
    by_node = {r.node: r for r in rows}
    assert by_node["worker-1"].passed
    assert "-> 10.244.2.2 (worker-2)" in by_node["worker-1"].seen
    assert by_node["worker-2"].failed
    assert "No route to host" in by_node["worker-2"].seen
    # Each pod asked the other's IP.
    targets = {pod: argv[2] for pod, argv in fake_kube.exec_calls}
    assert "host=10.244.2.2;" in targets["nginx-6d8f7b9c5-4xk2p"]
    assert "host=10.244.1.2;" in targets["nginx-6d8f7b9c5-9vq7d"]


def test_pod_to_pod_needs_pods_on_two_workers(fake_kube: FakeKube) -> None:
    fake_kube.pod_items = items("pods-nginx-one-worker.json")
    rows = run_checks(ctx_of(fake_kube), select("pod_to_pod", load_all().values()))
    assert [r.status for r in rows] == ["fail"]
    assert "found them on worker-1" in rows[0].seen


def test_nginx_deployment_on_one_worker_fails(fake_kube: FakeKube) -> None:
    fake_kube.pod_items = items("pods-nginx-one-worker.json")
    rows = run_checks(ctx_of(fake_kube), select("deployment", load_all().values()))
    assert rows[0].failed
    assert "none on worker-2" in rows[0].seen
    assert "topologySpreadConstraint" in rows[0].remedy


def test_nginx_cluster_ip(fake_kube: FakeKube) -> None:
    fake_kube.exec_results[("nginx-6d8f7b9c5-4xk2p", "bash")] = Result(
        "pod", "bash", 0, NGINX_PAGE, ""
    )
    rows = run_checks(ctx_of(fake_kube), select("cluster_ip", load_all().values()))
    assert rows[0].passed
    assert "10.103.17.42:80" in rows[0].seen


def test_nginx_cluster_ip_other_page_fails(fake_kube: FakeKube) -> None:
    fake_kube.exec_results[("nginx-6d8f7b9c5-4xk2p", "bash")] = Result(
        "pod", "bash", 0, "<h1>403 Forbidden</h1>\nHTTP-STATUS 403\n", ""
    )
    rows = run_checks(ctx_of(fake_kube), select("cluster_ip", load_all().values()))
    assert rows[0].failed
    assert "HTTP 403 with another page" in rows[0].seen


@pytest.mark.parametrize(
    ("stdout", "code"),
    [
        (NGINX_PAGE, 200),  # curl
        (
            "HTTP/1.1 200 OK\r\nServer: nginx\r\n\r\n<h1>MiniCluster</h1>",
            200,
        ),  # /dev/tcp
        ("HTTP/1.1 404 Not Found\r\n", 404),
        ("", 0),
    ],
)
def test_parse_http_probe(stdout: str, code: int) -> None:
    assert parse_http_probe(Result("pod", "bash", 0, stdout, ""))[0] == code


def test_http_probe_quotes_its_host() -> None:
    argv = http_probe_argv("10.0.0.1; rm -rf /", 80)
    assert "host='10.0.0.1; rm -rf /';" in argv[2]


def test_service_json_shape_is_what_the_checks_read() -> None:
    spec = json.loads(data("service-nginx.json"))["spec"]
    assert spec["ports"][0]["nodePort"] == 30080


class SwapHost:
    """A node whose /proc/swaps lists the host's swap file (a docker node)."""

    name = "worker-1"

    def run(self, command: str, timeout: float | None = None) -> Result:
        return Result(self.name, command, 0, self.check_output(command), "")

    def check_output(self, command: str, timeout: float | None = None) -> str:
        swaps = "Filename Type Size Used Priority\n/swapfile file 1048572 0 -2\n"
        return f"{swaps}--minicluster--\n"


@pytest.mark.parametrize(
    ("provider", "status"), [("docker", "skip"), ("libvirt", "fail")]
)
def test_swap_of_the_docker_host_is_not_the_nodes(provider: str, status: str) -> None:
    settings = FakeSettings(provider=provider)
    ctx = Context(settings, {"worker-1": SwapHost()})
    check = load_all()["hosts.swap_off"]
    row = next(r for r in check.run(ctx) if r.node == "worker-1")
    assert row.status == status
    assert "/swapfile" in row.seen
