"""Every image of the bundle imports into a real containerd and its program runs."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from bundle_daemons import Containerd

from harness.bundle.build import Build


@pytest.fixture(scope="module")
def imported(bundle: Path, containerd: Containerd) -> dict[str, str]:
    """Import every images/*.tar as the provisioners do; return name -> reference."""
    images = json.loads((bundle / "manifest.json").read_text())["images"]
    for name in images:
        done = containerd.ctr(
            "images", "import", str(bundle / "images" / f"{name}.tar")
        )
        assert done.returncode == 0, done.stderr
    listed = containerd.ctr("images", "ls", "-q").stdout.split()
    assert sorted(listed) == sorted(images.values())
    return dict(images)


def version_of(build: Build, name: str) -> str:
    return {
        "kubernetes": build.version,
        "etcd": build.etcd_version.removeprefix("v"),
        "coredns": build.tag("coredns").removeprefix("v"),
        "flannel": build.pins.flannel,
    }[name]


@pytest.mark.parametrize(
    ("image", "command", "expected"),
    [
        ("kube-apiserver", ["kube-apiserver", "--version"], "kubernetes"),
        (
            "kube-controller-manager",
            ["kube-controller-manager", "--version"],
            "kubernetes",
        ),
        ("kube-scheduler", ["kube-scheduler", "--version"], "kubernetes"),
        ("kube-proxy", ["kube-proxy", "--version"], "kubernetes"),
        ("etcd", ["etcd", "--version"], "etcd"),
        ("etcd", ["etcdctl", "version"], "etcd"),
        ("coredns", ["/coredns", "-version"], "coredns"),
        ("flannel", ["/opt/bin/flanneld", "--version"], "flannel"),
    ],
)
def test_program_reports_its_version(
    containerd: Containerd,
    imported: dict[str, str],
    bundle_build: Build,
    image: str,
    command: list[str],
    expected: str,
) -> None:
    out = containerd.run(imported[image], *command)
    assert version_of(bundle_build, expected) in out


@pytest.mark.parametrize("image", ["kube-proxy", "flannel"])
def test_netfilter_tools_run(
    containerd: Containerd, imported: dict[str, str], image: str
) -> None:
    assert "nf_tables" in containerd.run(imported[image], "iptables", "--version")
    assert "conntrack" in containerd.run(imported[image], "conntrack", "--version")


def test_flannel_cni_plugin_answers_cni_version(
    containerd: Containerd, imported: dict[str, str]
) -> None:
    image = imported["flannel-cni-plugin"]
    out = containerd.run(image, "/flannel", env=["CNI_COMMAND=VERSION"])
    assert "0.3.1" in json.loads(out)["supportedVersions"]
    # Flannel's DaemonSet copies the plugin out of this image with cp.
    assert "coreutils" in containerd.run(image, "cp", "--version")


def test_nginx_config_is_valid(
    containerd: Containerd, imported: dict[str, str]
) -> None:
    out = containerd.run(imported["nginx"], "nginx", "-v")
    assert "nginx version: nginx/" in out
    assert "test is successful" in containerd.run(imported["nginx"], "nginx", "-t")


def running(containerd: Containerd, name: str) -> bool:
    tasks = containerd.ctr("tasks", "ls").stdout.splitlines()
    return any(line.split()[0] == name and "RUNNING" in line for line in tasks[1:])


@pytest.mark.parametrize(
    ("image", "signal"), [("pause", "SIGTERM"), ("nginx", "SIGQUIT")]
)
def test_service_runs_until_signalled(
    containerd: Containerd, imported: dict[str, str], image: str, signal: str
) -> None:
    name = f"svc-{image}-{time.monotonic_ns()}"
    argv = ["ctr", "--address", str(containerd.address), "-n", "k8s.io"]
    with subprocess.Popen(
        [*argv, "run", "--rm", imported[image], name],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as process:
        try:
            deadline = time.monotonic() + 30
            while not running(containerd, name):
                assert process.poll() is None, process.communicate()[0]
                assert time.monotonic() < deadline, f"{image} never started"
                time.sleep(0.2)
            time.sleep(1)  # still running a second later: it does not exit on its own
            assert running(containerd, name)
            containerd.ctr("tasks", "kill", "--signal", signal, name)
            output = process.communicate(timeout=30)[0]
            assert process.returncode == 0, output
        finally:
            if process.poll() is None:
                containerd.ctr("tasks", "kill", "--signal", "SIGKILL", name)
                process.communicate(timeout=30)
