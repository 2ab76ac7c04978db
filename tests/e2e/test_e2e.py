"""The whole cluster through Vagrant's docker provider: up, verify, faults, teardown.

Each test is one phase, run in file order; ``phases.json`` in the results
directory gets each phase's time.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from harness.cache import cache_root
from harness.checks.probes import DEMO_NAMESPACE, DEMO_SELECTOR
from harness.kube import Kube, kubeconfig_path, parse_pod
from tests.e2e import dockerhost
from tests.e2e.driver import UP_TIMEOUT_S, Run, docker_lines
from tests.phases import Phases

logger = logging.getLogger("tests.e2e")

pytestmark = pytest.mark.e2e

# The warm-run goal for `vagrant up` plus the first green verify.
UP_AND_VERIFY_GOAL_S = 5 * 60
RECOVERY_TIMEOUT_S = 600


def node_networks(settings: Any) -> list[str]:
    return [dockerhost.BRIDGE_CIDR, settings.node_subnet]


def created_containers(root: Path) -> list[str]:
    """Return the ids of the containers Vagrant made for this checkout."""
    ids = root.glob(".vagrant/machines/*/docker/id")
    return sorted(path.read_text(encoding="utf-8").strip() for path in ids)


def test_docker_host_is_isolated(
    docker_daemon: dockerhost.Daemon, e2e_settings: Any, phases: Phases
) -> None:
    with phases.phase("docker-daemon"):
        assert dockerhost.daemon_answers()
        problems = dockerhost.isolation_problems(node_networks(e2e_settings))
        problems += [
            f"{route} already carries the node network; stop what uses it"
            for route in dockerhost.routes_elsewhere(e2e_settings.node_subnet)
        ]
        assert not problems, "\n".join(problems)


def test_node_image(e2e: Run, e2e_settings: Any, phases: Phases) -> None:
    with phases.phase("node-image"):
        e2e.minicluster("image", "build", timeout=30 * 60)
    image = e2e_settings.providers["docker"]["image"]
    assert docker_lines("image", "ls", "--quiet", image), f"no image {image}"


def test_bundle(e2e: Run, e2e_settings: Any, phases: Phases) -> None:
    with phases.phase("bundle"):
        e2e.minicluster("bundle", "build", timeout=60 * 60)
    root = cache_root(e2e.env) / "bundle"
    manifest = root / f"v{e2e_settings.kubernetes_version}" / "manifest.json"
    assert manifest.is_file(), f"the bundle build left no {manifest}"
    e2e.env["MINICLUSTER_BUNDLE_PATH"] = str(root)


def test_up(e2e: Run, phases: Phases) -> None:
    e2e.notes["volumes"] = set(docker_lines("volume", "ls", "--quiet"))
    e2e.notes["networks"] = set(docker_lines("network", "ls", "--format", "{{.Name}}"))
    with phases.phase("up"):
        e2e.vagrant("up", "--provider=docker", timeout=UP_TIMEOUT_S)
    e2e.notes["containers"] = created_containers(e2e.root)
    assert e2e.notes["containers"], "vagrant up made no container"


def test_nodes_cannot_leave_this_machine(
    e2e: Run, e2e_settings: Any, phases: Phases
) -> None:
    with phases.phase("isolation"):
        problems = dockerhost.isolation_problems(node_networks(e2e_settings))
        local = dockerhost.host_addresses()
        # Flannel routes the other nodes' pod subnets through its overlay.
        pods = ipaddress.ip_network(e2e_settings.pod_cidr)
        for node in e2e_settings.nodes:
            routes, resolv = e2e.ssh(
                node.name, "ip -json -4 route show; echo ===; cat /etc/resolv.conf"
            ).split("===\n", 1)
            for route in json.loads(routes):
                gateway = route.get("gateway")
                if not gateway or gateway in local:
                    continue
                if ipaddress.ip_address(gateway) not in pods:
                    dst = route["dst"]
                    problems.append(f"{node.name}: {dst} via {gateway}, not this host")
            for line in resolv.splitlines():
                words = line.split()
                if words[:1] == ["nameserver"] and words[1] not in local:
                    problems.append(
                        f"{node.name}: resolver {words[1]} is not this host"
                    )
        assert not problems, "\n".join(problems)


def test_verify(e2e: Run, phases: Phases) -> None:
    with phases.phase("verify"):
        e2e.wait_green("up", timeout_s=RECOVERY_TIMEOUT_S)
    up_and_verify = phases.seconds("up") + phases.seconds("verify")
    if up_and_verify > UP_AND_VERIFY_GOAL_S:
        logger.warning(
            "up + verify took %.0f s, over the %d s goal of a warm run",
            up_and_verify,
            UP_AND_VERIFY_GOAL_S,
        )


def test_provision_again_changes_nothing(e2e: Run, phases: Phases) -> None:
    with phases.phase("reprovision"):
        e2e.vagrant("provision", timeout=UP_TIMEOUT_S)
        e2e.wait_green("reprovision", timeout_s=RECOVERY_TIMEOUT_S)


def test_stopped_kubelet_fails_naming_the_worker(
    e2e: Run, e2e_settings: Any, phases: Phases
) -> None:
    worker = e2e_settings.workers[0].name
    with phases.phase("fault-kubelet"):
        e2e.ssh(worker, "systemctl stop kubelet")
        try:
            verdict = e2e.verify("kubelet-stopped")
        finally:
            e2e.ssh(worker, "systemctl start kubelet")
        assert verdict.exited != 0, "verify passed with kubelet stopped"
        named = [
            f for f in verdict.failures if worker in (f.get("node"), f.get("seen"))
        ]
        assert named, f"no failure names {worker}:\n{verdict.describe()}"
        e2e.wait_green("kubelet-started", timeout_s=RECOVERY_TIMEOUT_S)


def test_deleted_nginx_pod_is_replaced(e2e: Run, phases: Phases) -> None:
    kube = Kube(kubeconfig_path(e2e.root))
    with phases.phase("fault-nginx-pod"):
        before = [parse_pod(p) for p in kube.pods(DEMO_NAMESPACE, DEMO_SELECTOR)]
        assert before, f"no pod matches {DEMO_SELECTOR} in {DEMO_NAMESPACE}"
        victim = before[0].name
        kube.core.delete_namespaced_pod(victim, DEMO_NAMESPACE)
        logger.info("deleted pod %s/%s", DEMO_NAMESPACE, victim)
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        while True:
            pods = [parse_pod(p) for p in kube.pods(DEMO_NAMESPACE, DEMO_SELECTOR)]
            ready = [p for p in pods if p.ready and p.name != victim]
            if len(ready) >= len(before):
                break
            assert time.monotonic() < deadline, f"pods after deleting {victim}: {pods}"
            time.sleep(3)
        e2e.wait_green("nginx-pod-replaced", timeout_s=RECOVERY_TIMEOUT_S)


def test_halted_worker_comes_back(e2e: Run, e2e_settings: Any, phases: Phases) -> None:
    worker = e2e_settings.workers[-1].name
    with phases.phase("fault-halt-worker"):
        e2e.vagrant("halt", worker)
        e2e.vagrant("up", "--provider=docker", worker, timeout=UP_TIMEOUT_S)
        e2e.wait_green("worker-back", timeout_s=RECOVERY_TIMEOUT_S)


@pytest.mark.always
def test_destroy_leaves_nothing(
    request: pytest.FixtureRequest, e2e: Run, e2e_settings: Any, phases: Phases
) -> None:
    if request.config.getoption("--keep-cluster"):
        pytest.skip("--keep-cluster: the nodes stay up")
    with phases.phase("destroy"):
        e2e.vagrant("destroy", "--force")
    containers = set(docker_lines("ps", "--all", "--quiet", "--no-trunc"))
    left = [c for c in e2e.notes.get("containers", []) if c in containers]
    assert not left, f"containers left behind: {left}"
    volumes = set(docker_lines("volume", "ls", "--quiet"))
    new_volumes = volumes - e2e.notes.get("volumes", volumes)
    assert not new_volumes, f"volumes left behind: {sorted(new_volumes)}"
    networks = set(docker_lines("network", "ls", "--format", "{{.Name}}"))
    subnet = ipaddress.ip_network(e2e_settings.node_subnet)
    ours = f"vagrant_network_{subnet}"
    assert ours not in networks, f"network {ours} left behind"
    new_networks = networks - e2e.notes.get("networks", networks)
    assert not new_networks, f"networks left behind: {sorted(new_networks)}"
