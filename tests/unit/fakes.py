"""Captured data, and fakes that stand in for a cluster in the unit tests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import Result
from harness.settings import Nfs, Nginx, Node

DATA = Path(__file__).parent / "data"


def data(name: str) -> str:
    """Return the text of a captured file of tests/unit/data."""
    return (DATA / name).read_text(encoding="utf-8")


def items(name: str) -> list[dict[str, Any]]:
    """Return the objects of a captured ``kubectl get -o json`` List."""
    loaded: list[dict[str, Any]] = json.loads(data(name))["items"]
    return loaded


@dataclass
class FakeSettings:
    """The settings fields the checks read, for the three nodes of cluster.yaml."""

    nodes: list[Node] = field(
        default_factory=lambda: [
            Node("control-plane", "control-plane", "192.168.56.10", 2, 2048),
            Node("worker-1", "worker", "192.168.56.11", 2, 2048),
            Node("worker-2", "worker", "192.168.56.12", 2, 2048),
        ]
    )
    provider: str = "virtualbox"
    kubernetes_version: str = "1.36.3"
    service_cidr: str = "10.96.0.0/12"
    nfs: Nfs = field(
        default_factory=lambda: Nfs(
            "control-plane", "192.168.56.10", "/srv/nfs/share", "/mnt/share"
        )
    )
    nginx: Nginx = field(
        default_factory=lambda: Nginx("docker.io/library/nginx:1.29.3", 2, 30080)
    )


class FakeKube:
    """Answers the checks' API calls from captured objects."""

    def __init__(self) -> None:
        self.node_items = items("nodes-healthy.json")
        self.pod_items = items("pods-nginx.json")
        self.deployment_obj = json.loads(data("deployment-nginx.json"))
        self.service_obj = json.loads(data("service-nginx.json"))
        self.readyz = {
            "/readyz": (200, "ok"),
            "/readyz?verbose": (200, data("readyz-verbose.txt")),
        }
        self.exec_results: dict[tuple[str, str], Result] = {}
        self.exec_calls: list[tuple[str, list[str]]] = []

    def nodes(self) -> list[dict[str, Any]]:
        return self.node_items

    def pods(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        return self.pod_items

    def deployment(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.deployment_obj)

    def service(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.service_obj)

    def get_raw(self, path: str) -> tuple[int, str]:
        return self.readyz[path]

    def exec(
        self, namespace: str, pod: str, argv: list[str], timeout_s: float = 20
    ) -> Result:
        self.exec_calls.append((pod, argv))
        key = (pod, argv[0])
        return self.exec_results.get(
            key, Result(f"pod {namespace}/{pod}", " ".join(argv), 0, "", "")
        )
