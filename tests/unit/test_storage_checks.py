"""The storage checks' parsers and blame rule, on output captured from the VMs."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from harness.checks import Context, load_all, run_checks, select
from harness.checks.storage import (
    Export,
    blame,
    parse_exportfs,
    parse_findmnt,
    parse_fstab,
    parse_reads,
    read_command,
)
from harness.errors import Result
from harness.settings import Nfs, Node

# `exportfs -v` on the control plane after provision/nfs-server.sh.
EXPORTFS = (
    "/srv/nfs/share\t192.168.56.0/24(sync,wdelay,hide,no_subtree_check,sec=sys,"
    "rw,secure,root_squash,no_all_squash)\n"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (EXPORTFS, [("/srv/nfs/share", "192.168.56.0/24", True)]),
        # a path too long for its column puts the client on the next line
        (
            "/srv/a/rather/long/exported/path\n\t\t10.0.0.0/8(ro,sync)\n",
            [("/srv/a/rather/long/exported/path", "10.0.0.0/8", False)],
        ),
        # two clients of one path
        (
            "/srv/x\t10.1.0.0/16(rw) *(ro)\n",
            [("/srv/x", "10.1.0.0/16", True), ("/srv/x", "*", False)],
        ),
        ("", []),  # nothing exported (the export removed, the server stopped)
    ],
)
def test_parse_exportfs(text: str, expected: list[tuple[str, str, bool]]) -> None:
    exports = parse_exportfs(text)
    assert [(e.path, e.client, "rw" in e.options) for e in exports] == expected
    assert all(isinstance(e, Export) for e in exports)


def test_parse_findmnt() -> None:
    # `findmnt -n -o FSTYPE,SOURCE,OPTIONS --mountpoint /mnt/share` on a worker
    text = (
        "nfs4   192.168.56.10:/srv/nfs/share rw,relatime,vers=4.2,rsize=524288,"
        "wsize=524288,namlen=255,hard,proto=tcp,timeo=600,retrans=2,sec=sys\n"
    )
    mount = parse_findmnt(text)
    assert mount is not None
    assert (mount.fstype, mount.source) == ("nfs4", "192.168.56.10:/srv/nfs/share")
    assert "hard" in mount.options
    assert parse_findmnt("") is None  # unmounted


def test_parse_fstab() -> None:
    fstab = (
        "UUID=0b7e /  ext4 errors=remount-ro 0 1\n"
        "# 192.168.56.10:/old /mnt/share nfs defaults 0 0\n"
        "192.168.56.10:/srv/nfs/share /mnt/share nfs defaults,_netdev,nofail 0 0\n"
    )
    [entry] = parse_fstab(fstab, "/mnt/share")
    assert entry[:3] == ["192.168.56.10:/srv/nfs/share", "/mnt/share", "nfs"]
    assert entry[3] == "defaults,_netdev,nofail"
    assert parse_fstab(fstab, "/mnt/other") == []


def test_parse_reads() -> None:
    text = (
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 16384 "
        "/mnt/share/.minicluster-check-ab-worker-1\n"
        "MISSING /mnt/share/.minicluster-check-ab-worker-2\n"
    )
    assert parse_reads(text) == {
        "/mnt/share/.minicluster-check-ab-worker-1": (
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            16384,
        ),
        "/mnt/share/.minicluster-check-ab-worker-2": None,
    }


def test_read_command_guards_every_read() -> None:
    command = read_command(["/mnt/share/a", "/mnt/share/b"])
    assert command.count("timeout -s KILL") == 2
    assert command.count("|| echo MISSING") == 2


NODES = ["control-plane", "worker-1", "worker-2"]


def _ok(bad: set[tuple[str, str]]) -> dict[tuple[str, str], bool]:
    return {(r, w): (r, w) not in bad for r in NODES for w in NODES if r != w}


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        # all well
        (set(), {"control-plane": [], "worker-1": [], "worker-2": []}),
        # worker-1 lost its mount: nobody reads its file, it reads nobody's
        (
            {
                ("worker-1", "control-plane"),
                ("worker-1", "worker-2"),
                ("control-plane", "worker-1"),
                ("worker-2", "worker-1"),
            },
            {
                "control-plane": [],
                "worker-1": ["control-plane", "worker-2"],
                "worker-2": [],
            },
        ),
        # the server serves nobody: every node is isolated
        (
            {(r, w) for r in NODES for w in NODES if r != w},
            {
                "control-plane": ["worker-1", "worker-2"],
                "worker-1": ["control-plane", "worker-2"],
                "worker-2": ["control-plane", "worker-1"],
            },
        ),
        # one file read back wrong between two nodes that otherwise exchange
        (
            {("worker-2", "worker-1")},
            {
                "control-plane": [],
                "worker-1": ["worker-2"],
                "worker-2": ["worker-1"],
            },
        ),
    ],
)
def test_blame(bad: set[tuple[str, str]], expected: dict[str, list[str]]) -> None:
    assert blame(NODES, _ok(bad)) == expected


# --- a kernel without NFS (a docker-provider node): every check skips ---


@dataclass
class _Settings:
    nodes: list[Node]
    provider: str = "docker"
    node_subnet: str = "192.168.56.0/24"
    nfs: Nfs = field(
        default_factory=lambda: Nfs(
            "control-plane", "192.168.56.10", "/srv/nfs/share", "/mnt/share"
        )
    )


class _NoNfsNode:
    """Answers like a docker node on a host kernel built without NFS."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.commands: list[str] = []

    def run(self, command: str, timeout: float | None = None) -> Result:
        self.commands.append(command)
        if command.startswith("cat /proc/fs/nfsd/threads"):
            return Result(self.name, command, 0, "0\ninactive\n", "")
        if command == "cat /etc/fstab":
            return Result(self.name, command, 0, "# empty\n", "")
        # grep in /proc/filesystems, modinfo, findmnt, exportfs, writes: all fail.
        return Result(self.name, command, 1, "", "")

    def check_output(self, command: str, timeout: float | None = None) -> str:
        raise AssertionError(f"the storage checks use run(), not {command!r}")


def _no_nfs_context() -> Context:
    nodes = [
        Node("control-plane", "control-plane", "192.168.56.10", 2, 2048),
        Node("worker-1", "worker", "192.168.56.11", 2, 2048),
    ]
    return Context(_Settings(nodes), {n.name: _NoNfsNode(n.name) for n in nodes})


def test_every_check_skips_on_a_kernel_without_nfs() -> None:
    load_all()
    ctx = _no_nfs_context()
    rows = run_checks(ctx, select("storage"), parallel=False)
    assert {r.name for r in rows} == {
        "storage.server_running",
        "storage.export",
        "storage.mounted",
        "storage.mounted_at_boot",
        "storage.shared_files",
    }
    assert all(r.skipped for r in rows), [(r.name, r.node, r.status) for r in rows]
    assert all("this kernel has no nfs" in r.seen for r in rows)
    assert {r.node for r in rows if r.name == "storage.shared_files"} == {
        "control-plane",
        "worker-1",
    }
