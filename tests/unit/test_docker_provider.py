"""The docker provider's pure parts: the image's inputs hash, the e2e run's parsers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness import nodeimage
from tests.e2e.dockerhost import masquerade_sources
from tests.e2e.driver import Verdict

# `iptables -t nat -S` on a Docker host, as captured with two node containers.
NAT_RULES = """\
-P PREROUTING ACCEPT
-P POSTROUTING ACCEPT
-N DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -s 192.168.56.0/24 ! -o br-494e57d12f57 -j MASQUERADE
-A POSTROUTING -s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 22 -j MASQUERADE
-A POSTROUTING -j LIBVIRT_PRT
-A DOCKER -i docker0 -j RETURN
"""


def test_masquerade_sources_leave_out_hairpin_rules() -> None:
    assert masquerade_sources(NAT_RULES) == ["172.17.0.0/16", "192.168.56.0/24"]


def test_masquerade_sources_of_an_isolated_host() -> None:
    isolated = "-P POSTROUTING ACCEPT\n-A POSTROUTING -j LIBVIRT_PRT\n"
    assert masquerade_sources(isolated) == []


def row(name: str, status: str, seen: str = "", node: str = "") -> dict[str, Any]:
    return {"name": name, "node": node, "status": status, "seen": seen, "remedy": ""}


NFS_SKIP = (
    "this kernel has no nfs (not in /proc/filesystems, no nfs module) "
    "(a docker node runs on the host's kernel), so it cannot mount NFS"
)


@pytest.mark.parametrize(
    ("rows", "exited", "green"),
    [
        # every check passed
        ([row("nodes.ready", "pass")], 0, True),
        # the NFS checks skip for the kernel, as on this project's CI host
        (
            [row("nodes.ready", "pass"), row("storage.mounted", "skip", NFS_SKIP)],
            0,
            True,
        ),
        # a skip for any other reason is not green
        ([row("nginx.node_port", "skip", "no route to the node addresses")], 0, False),
        # a failure is not green, whatever the exit code says
        (
            [row("hosts.services_active", "fail", "kubelet inactive", "worker-1")],
            0,
            False,
        ),
        # nor is a non-zero exit
        ([row("nodes.ready", "pass")], 1, False),
    ],
)
def test_verdict_is_green(rows: list[dict[str, Any]], exited: int, green: bool) -> None:
    assert Verdict(exited, rows).is_green is green


def test_verdict_describes_what_is_wrong() -> None:
    verdict = Verdict(
        1, [row("hosts.services_active", "fail", "kubelet inactive", "w1")]
    )
    assert verdict.describe() == "fail hosts.services_active[w1]: kubelet inactive"


@pytest.fixture
def vagrant_key(tmp_path: Path) -> Path:
    key = tmp_path / "vagrant.pub"
    key.write_text("ssh-rsa AAAA vagrant insecure public key\n")
    return key


def test_inputs_digest_is_stable(vagrant_key: Path) -> None:
    assert nodeimage.inputs_digest(vagrant_key) == nodeimage.inputs_digest(vagrant_key)


def test_inputs_digest_follows_packages_and_key(vagrant_key: Path) -> None:
    digest = nodeimage.inputs_digest(vagrant_key)
    more = (*nodeimage.PACKAGES, "strace")
    assert nodeimage.inputs_digest(vagrant_key, more) != digest
    vagrant_key.write_text("ssh-ed25519 AAAA another key\n")
    assert nodeimage.inputs_digest(vagrant_key) != digest


def test_image_files_exist() -> None:
    for source, target, _mode in nodeimage.IMAGE_FILES:
        assert (nodeimage.IMAGE_DIR / source).is_file(), source
        assert not target.startswith("/"), target
    targets = [target for _, target, _ in nodeimage.IMAGE_FILES]
    assert nodeimage.ENTRYPOINT.lstrip("/") in targets
