"""The Vagrantfile: it follows harness.settings and stops on the same errors.

Two ways in: ``tests/unit/vagrantfile_probe.rb`` loads the Vagrantfile with a
recording stand-in for Vagrant's API (fast, no provider needed), and the real
``vagrant`` runs ``status`` and ``validate`` (skipped where it is not installed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from harness import settings
from tests.e2e import dockerhost
from tests.storage import libvirt

ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("vagrantfile_probe.rb")
CORPUS = sorted((Path(__file__).parent / "corpus").glob("*.yaml"))
HEADER = "MiniCluster: the settings are invalid, so no machine was touched:"
# Each vagrant call forks Ruby and loads every plugin: about 1.5 s here.
VAGRANT_TIMEOUT_S = 120

needs_ruby = pytest.mark.skipif(not shutil.which("ruby"), reason="needs ruby")
needs_vagrant = pytest.mark.skipif(
    not shutil.which("vagrant"), reason="needs vagrant (apt install vagrant)"
)

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def host_env(tmp_path: Path) -> dict[str, str]:
    """Return an environment free of the caller's MiniCluster and Vagrant knobs."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MINICLUSTER_", "VAGRANT_"))
    }
    # Machine state goes to a scratch directory, never to the checkout's .vagrant.
    env["VAGRANT_DOTFILE_PATH"] = str(tmp_path / "dotfile")
    # The repository's cluster.yaml, without a developer's cluster.local.yaml.
    (tmp_path / "base").mkdir()
    base = tmp_path / "base" / "cluster.yaml"
    base.write_text((ROOT / "cluster.yaml").read_text())
    env["MINICLUSTER_CONFIG"] = str(base)
    env["VAGRANT_CHECKPOINT_DISABLE"] = "1"
    env["VAGRANT_BOX_UPDATE_CHECK_DISABLE"] = "1"
    return env


@pytest.fixture
def run(host_env: dict[str, str]) -> Run:
    """Return a runner of a command in the repository root with extra environment."""

    def _run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args),
            cwd=ROOT,
            env={**host_env, **extra},
            capture_output=True,
            text=True,
            timeout=VAGRANT_TIMEOUT_S,
            check=False,
        )

    return _run


def error_lines(stderr: str) -> list[str]:
    """Return the problem lines the Vagrantfile printed under its header."""
    lines = stderr.splitlines()
    assert HEADER in lines, stderr
    return [line for line in lines[lines.index(HEADER) + 1 :] if line.strip()]


def expected_messages(path: Path) -> list[str]:
    prefix = "# expect: "
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line[len(prefix) :] for line in lines if line.startswith(prefix)]


def probe(run: Run, *args: str, **extra: str) -> dict[str, Any]:
    """Return what the Vagrantfile declares, loaded by the recording probe."""
    done = run("ruby", str(PROBE), *args, **extra)
    assert done.returncode == 0, done.stderr
    record: dict[str, Any] = json.loads(done.stdout)
    return record


def machines(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return the body of each ``config.vm.define``, by machine name."""
    defines = record["configure"]["config"]["vm"]["define"]
    return {d["args"][0]: d["body"] for d in defines}


def provider_block(machine: dict[str, Any], name: str) -> dict[str, Any]:
    """Return the ``node.vm.provider NAME`` call of a machine."""
    return next(p for p in machine["vm"]["provider"] if p["args"] == [name])


def config_file(tmp_path: Path, local: str) -> Path:
    """Return a copy of cluster.yaml with ``local`` merged in, as its own file."""
    (tmp_path / "cluster.yaml").write_text((ROOT / "cluster.yaml").read_text())
    (tmp_path / "cluster.local.yaml").write_text(local)
    return tmp_path / "cluster.yaml"


@needs_ruby
def test_machines_follow_the_settings(run: Run, host_env: dict[str, str]) -> None:
    record = probe(run)
    environ = {"MINICLUSTER_CONFIG": host_env["MINICLUSTER_CONFIG"]}
    expected = settings.load(ROOT, environ, networks_conf=Path("/nonexistent"))
    found = machines(record)
    assert list(found) == [n.name for n in expected.nodes]
    for node in expected.nodes:
        machine = found[node.name]
        network = machine["vm"]["network"][0]
        assert network["args"] == ["private_network"]
        assert network["options"]["ip"] == node.address
        assert machine["vm"]["hostname"] == node.name
        provisions = machine["vm"]["provision"]
        assert [p["args"][0] for p in provisions] == expected.provisioners(node)
        for p in provisions:
            assert p["options"]["path"] == f"provision/{p['args'][0]}.sh"
            assert p["options"]["env"] == expected.environment(node)
        vbox = provider_block(machine, "virtualbox")["body"]
        assert (vbox["memory"], vbox["cpus"]) == (node.memory_mb, node.cpus)
    vm = record["configure"]["config"]["vm"]
    assert (vm["box"], vm["box_version"]) == (
        expected.box["name"],
        expected.box["version"],
    )
    assert record["require_version"] == [">= 2.3.0"]
    # The provider setting reaches Vagrant as its default provider.
    assert record["VAGRANT_DEFAULT_PROVIDER"] == "virtualbox"


@needs_ruby
def test_three_workers_make_four_machines(run: Run, tmp_path: Path) -> None:
    config = config_file(tmp_path, "nodes:\n  workers:\n    count: 3\n")
    found = machines(probe(run, MINICLUSTER_CONFIG=str(config)))
    addresses = {n: m["vm"]["network"][0]["options"]["ip"] for n, m in found.items()}
    assert addresses == {
        "control-plane": "192.168.56.10",
        "worker-1": "192.168.56.11",
        "worker-2": "192.168.56.12",
        "worker-3": "192.168.56.13",
    }


@needs_ruby
def test_docker_block_uses_the_node_image(run: Run) -> None:
    record = probe(run, "up", "--provider=docker", MINICLUSTER_DOCKER_PRIVILEGED="no")
    machine = machines(record)["worker-1"]
    docker = provider_block(machine, "docker")
    assert docker["override"] == {"vm": {"box": None}}
    body = docker["body"]
    assert body["has_ssh"] is True
    assert body["cmd"] == ["/usr/local/bin/minicluster-entry"]
    assert body["create_args"] == settings.docker_create_args(privileged=False)
    assert machine["vm"]["provision"][0]["options"]["env"]["MINICLUSTER_PROVIDER"] == (
        "docker"
    )
    # --provider wins, so the Vagrantfile leaves Vagrant's default alone.
    assert record["VAGRANT_DEFAULT_PROVIDER"] is None


@needs_ruby
def test_libvirt_block_takes_driver_and_synced_folder(run: Run) -> None:
    record = probe(
        run,
        VAGRANT_DEFAULT_PROVIDER="libvirt",
        MINICLUSTER_LIBVIRT_DRIVER="qemu",
        MINICLUSTER_LIBVIRT_SYNCED_FOLDER="9p",
    )
    machine = machines(record)["control-plane"]
    assert provider_block(machine, "libvirt")["body"]["driver"] == "qemu"
    folder = machine["vm"]["synced_folder"][0]
    assert folder["args"] == [str(ROOT), "/vagrant"]
    assert folder["options"] == {"type": "9p"}


@needs_ruby
def test_a_missing_python_is_explained(run: Run) -> None:
    done = run("ruby", str(PROBE), MINICLUSTER_PYTHON="/nonexistent/python3")
    assert done.returncode == 1
    assert error_lines(done.stderr)[0].startswith("/nonexistent/python3: not found;")


@needs_vagrant
def test_vagrant_status_lists_the_nodes(run: Run) -> None:
    # libvirt answers `status` for machines not created yet without its daemon,
    # where docker needs a running engine and virtualbox an installed VirtualBox.
    extra = {"VAGRANT_DEFAULT_PROVIDER": "libvirt"}
    if not libvirt.host_has_nfs_server():
        extra["MINICLUSTER_LIBVIRT_SYNCED_FOLDER"] = "9p"
    done = run("vagrant", "status", "--machine-readable", **extra)
    assert done.returncode == 0, done.stderr
    rows = [line.split(",") for line in done.stdout.splitlines()]
    states = {r[1]: r[3] for r in rows if len(r) > 3 and r[2] == "state"}
    assert states == dict.fromkeys(
        ["control-plane", "worker-1", "worker-2"], "not_created"
    )


def validate_args(provider: str) -> list[str]:
    """Return the `vagrant validate` arguments that work for ``provider`` here."""
    # validate asks the provider whether it is usable; without VirtualBox
    # installed, --ignore-provider still checks everything else.
    if provider == "virtualbox" and not shutil.which("VBoxManage"):
        return ["vagrant", "validate", "--ignore-provider"]
    # The same for docker when no Docker engine answers.
    if provider == "docker" and not dockerhost.daemon_answers():
        return ["vagrant", "validate", "--ignore-provider"]
    return ["vagrant", "validate"]


@needs_vagrant
@pytest.mark.parametrize("provider", settings.PROVIDERS)
def test_vagrant_validate_passes(run: Run, provider: str) -> None:
    extra = {"VAGRANT_DEFAULT_PROVIDER": provider}
    if provider == "libvirt" and not libvirt.host_has_nfs_server():
        # Vagrant refuses an NFS synced folder on a host without an NFS server,
        # and asks libvirt itself whether a 9p folder is usable, even with
        # --ignore-provider: without a daemon there is nothing to validate
        # against. tox -e storage brings the libvirt machines up for real.
        if not libvirt.is_up():
            pytest.skip(
                "libvirt validation needs an NFS server on the host or a "
                "running libvirtd (qemu:///system); tox -e storage starts one"
            )
        extra["MINICLUSTER_LIBVIRT_SYNCED_FOLDER"] = "9p"
    done = run(*validate_args(provider), **extra)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Vagrantfile validated successfully." in done.stdout


@needs_vagrant
def test_vagrant_up_stops_before_any_machine(
    run: Run, host_env: dict[str, str]
) -> None:
    bad = ROOT / "tests/unit/corpus/pod-cidr-overlaps-nodes.yaml"
    done = run("vagrant", "up", "--provider=docker", MINICLUSTER_CONFIG=str(bad))
    assert done.returncode == 1
    assert error_lines(done.stderr) == expected_messages(bad)
    assert not Path(host_env["VAGRANT_DOTFILE_PATH"], "machines").exists()


@needs_vagrant
def test_every_corpus_file_stops_vagrant_with_the_harness_message(run: Run) -> None:
    if Path(settings.NETWORKS_CONF).exists():
        pytest.skip(f"{settings.NETWORKS_CONF} changes the VirtualBox range messages")

    def status(path: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
        # The check runs while the Vagrantfile loads, before any plugin is used;
        # skipping plugin loading saves about a third of each run.
        done = run(
            "vagrant", "status", MINICLUSTER_CONFIG=str(path), VAGRANT_NO_PLUGINS="1"
        )
        return path, done

    # Each vagrant is mostly one Ruby process starting up: about 1 s of CPU.
    with ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 1)) as pool:
        results = list(pool.map(status, CORPUS))
    for path, done in results:
        assert done.returncode == 1, path.name
        assert error_lines(done.stderr) == expected_messages(path), path.name
