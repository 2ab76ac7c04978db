"""harness.kube through the real client, against a local server of captured answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.errors import KubeError, NoCluster
from harness.kube import Kube, parse_node, parse_readyz
from tests.unit.fakes import data

ANSWERS = {
    "/api/v1/nodes": (200, data("nodes-healthy.json").replace('"List"', '"NodeList"')),
    "/api/v1/namespaces/minicluster-demo/pods?labelSelector=app%3Dnginx": (
        200,
        data("pods-nginx.json").replace('"List"', '"PodList"'),
    ),
    "/apis/apps/v1/namespaces/minicluster-demo/deployments/nginx": (
        200,
        data("deployment-nginx.json"),
    ),
    "/readyz": (200, "ok"),
    "/readyz?verbose=": (500, data("readyz-verbose-etcd-down.txt")),
}


class Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body = ANSWERS.get(
            self.path, (404, json.dumps({"kind": "Status", "code": 404}))
        )
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Iterator[Path]:
    """Return a kubeconfig pointing at a local server of captured answers."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{server.server_port}\n"
        "contexts:\n- name: c\n  context: {cluster: c, user: u}\n"
        "users:\n- name: u\n  user: {token: t}\n"
    )
    yield path
    server.shutdown()
    server.server_close()
    thread.join()


def test_nodes_come_back_as_api_json(kubeconfig: Path) -> None:
    nodes = [parse_node(obj) for obj in Kube(kubeconfig).nodes()]
    assert [n.name for n in nodes] == ["control-plane", "worker-1", "worker-2"]
    assert nodes[0].roles == ("control-plane",)
    assert all(n.is_ready for n in nodes)


def test_pods_and_deployment(kubeconfig: Path) -> None:
    kube = Kube(kubeconfig)
    pods = kube.pods("minicluster-demo", "app=nginx")
    assert [p["spec"]["nodeName"] for p in pods] == ["worker-1", "worker-2"]
    assert (
        kube.deployment("minicluster-demo", "nginx")["status"]["availableReplicas"] == 2
    )


def test_raw_get_returns_status_and_body(kubeconfig: Path) -> None:
    kube = Kube(kubeconfig)
    assert kube.get_raw("/readyz") == (200, "ok")
    status, body = kube.get_raw("/readyz?verbose")
    assert status == 500
    assert parse_readyz(body)["etcd"] is False


def test_missing_object_is_a_kube_error(kubeconfig: Path) -> None:
    with pytest.raises(KubeError, match=r"read service default/nginx at .*: HTTP 404"):
        Kube(kubeconfig).service("default", "nginx")


def test_no_kubeconfig_is_no_cluster(tmp_path: Path) -> None:
    with pytest.raises(NoCluster, match="no kubeconfig at"):
        Kube(tmp_path / "kubeconfig")
