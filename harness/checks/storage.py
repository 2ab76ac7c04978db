"""Storage criteria: the NFS export, the share mounted on every node, shared files.

Every command that touches the share runs under ``timeout -s KILL``: a hard NFS
mount blocks while its server is away, and SIGKILL is the one signal that ends
such a wait. A node whose kernel has no NFS (a docker-provider node shares the
host's kernel) gets a skip that says so.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import shlex
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from harness.checks.base import (
    CheckResult,
    Context,
    cluster_check,
    failed,
    node_check,
    passed,
    skipped,
)
from harness.errors import HarnessError, Result

T = TypeVar("T")

# How long one file operation on the share may block before it counts as failed.
IO_TIMEOUT_S = 10
# Bytes each node writes for the others to read back.
PROBE_BYTES = 16384
PROBE_PREFIX = ".minicluster-check-"
NFS_TYPES = ("nfs", "nfs4")

# The kernel can do NFS if the filesystem is registered or its module exists.
_KERNEL_HAS = "grep -qw {fs} /proc/filesystems || modinfo {module} >/dev/null 2>&1"


@dataclass(frozen=True)
class Export:
    """One line of ``exportfs -v``: a path and one client with its options."""

    path: str
    client: str
    options: tuple[str, ...]


def parse_exportfs(text: str) -> list[Export]:
    """Return the exports ``exportfs -v`` lists, one per (path, client).

    Input looks like (a long path puts its client on the next line)::

        /srv/nfs/share  192.168.56.0/24(sync,wdelay,hide,no_subtree_check,rw)
        /srv/a/very/long/exported/path
                        10.0.0.0/8(ro,sync)
    """
    exports = []
    path = ""
    for line in text.splitlines():
        if not line.strip():
            continue
        words = line.split()
        if not line[0].isspace():
            path, words = words[0], words[1:]
        for word in words:
            client, _, opts = word.partition("(")
            options = tuple(o for o in opts.rstrip(")").split(",") if o)
            exports.append(Export(path, client, options))
    return exports


@dataclass(frozen=True)
class Mount:
    """What ``findmnt -n -o FSTYPE,SOURCE,OPTIONS`` says about a mount point."""

    fstype: str
    source: str
    options: str


def parse_findmnt(text: str) -> Mount | None:
    """Return the mount of ``findmnt -n -o FSTYPE,SOURCE,OPTIONS``, None if none.

    Input looks like::

        nfs4   192.168.56.10:/srv/nfs/share rw,relatime,vers=4.2,hard,proto=tcp
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    # The last line is the mount on top, the one a path lookup reaches.
    words = lines[-1].split()
    return Mount(words[0], words[1] if len(words) > 1 else "", " ".join(words[2:]))


def parse_fstab(text: str, mount_point: str) -> list[list[str]]:
    """Return the uncommented fstab entries (as fields) for ``mount_point``."""
    entries = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 3 and fields[1].rstrip("/") == mount_point.rstrip("/"):
            entries.append(fields)
    return entries


def _lacks(ctx: Context, node: Any, fs: str, module: str) -> str:
    """Return why the node's kernel cannot do ``fs``, or "" if it can."""
    if ctx.host(node).run(_KERNEL_HAS.format(fs=fs, module=module)).ok:
        return ""
    provider = getattr(ctx.settings, "provider", "")
    shared = (
        " (a docker node runs on the host's kernel)" if provider == "docker" else ""
    )
    return (
        f"this kernel has no {fs} (not in /proc/filesystems, no {module} module)"
        f"{shared}, so it cannot {'serve' if fs == 'nfsd' else 'mount'} NFS"
    )


def _or_skip(ctx: Context, node: Any, fs: str, result: CheckResult) -> CheckResult:
    """Return ``result``, or a skip if it failed on a kernel without ``fs``.

    The kernel is asked only after a failure: a healthy node costs no extra
    round trip.
    """
    if not result.failed:
        return result
    reason = _lacks(ctx, node, fs, fs)
    return skipped(reason, node=result.node) if reason else result


def _server_nodes(ctx: Context) -> list[Any]:
    return [node for node in ctx.nodes if node.name == ctx.settings.nfs.server]


@node_check(
    "storage.server_running",
    remedy="start the server: `systemctl start nfs-server`; "
    "`journalctl -u nfs-server` says why it stopped",
    nodes=_server_nodes,
)
def server_running(ctx: Context, node: Any) -> CheckResult:
    return _or_skip(ctx, node, "nfsd", _server_running(ctx, node))


def _server_running(ctx: Context, node: Any) -> CheckResult:
    out = ctx.host(node).run(
        "cat /proc/fs/nfsd/threads 2>/dev/null || echo 0; "
        "systemctl is-active nfs-server || true"
    )
    words = out.stdout.split()
    threads = int(words[0]) if words and words[0].isdigit() else 0
    state = words[1] if len(words) > 1 else "unknown"
    seen = f"nfs-server {state}, {threads} nfsd threads"
    return passed(seen) if threads > 0 and state == "active" else failed(seen)


@node_check(
    "storage.export",
    remedy="re-run provision/nfs-server.sh (it writes /etc/exports.d/"
    "minicluster.exports and runs `exportfs -ra`)",
    nodes=_server_nodes,
)
def export(ctx: Context, node: Any) -> CheckResult:
    return _or_skip(ctx, node, "nfsd", _export(ctx, node))


def _export(ctx: Context, node: Any) -> CheckResult:
    path, subnet = ctx.settings.nfs.export_path, ctx.settings.node_subnet
    out = ctx.host(node).run("exportfs -v")
    if not out.ok:
        return failed(f"exportfs -v exited {out.exited}: {out.stderr.strip()}")
    clients = [e for e in parse_exportfs(out.stdout) if e.path == path]
    if not clients:
        return failed(f"exportfs -v lists no {path}")
    wider = [e.client for e in clients if not _within(e.client, subnet)]
    if wider:
        return failed(
            f"{path} is exported to {', '.join(wider)}, beyond the node subnet "
            f"{subnet}",
            f"export {path} to {subnet} only (provision/nfs-server.sh does)",
        )
    writable = [e.client for e in clients if "rw" in e.options]
    if not writable:
        return failed(f"{path} is exported read-only to {clients[0].client}")
    return passed(f"{path} exported rw to {', '.join(writable)} only")


def _within(client: str, subnet: str) -> bool:
    """Tell whether an exportfs client (address or network) lies inside ``subnet``."""
    try:
        inner = ipaddress.IPv4Network(client, strict=False)
    except ValueError:
        # A host name, a wildcard (*) or a netgroup: not provably inside.
        return False
    return inner.subnet_of(ipaddress.IPv4Network(subnet))


def _expected_source(ctx: Context) -> str:
    return f"{ctx.settings.nfs.server_address}:{ctx.settings.nfs.export_path}"


@node_check(
    "storage.mounted",
    remedy="mount it: `mount <mount point>` (fstab has the entry), or re-run "
    "provision/nfs-mount.sh",
)
def mounted(ctx: Context, node: Any) -> CheckResult:
    return _or_skip(ctx, node, "nfs", _mounted(ctx, node))


def _mounted(ctx: Context, node: Any) -> CheckResult:
    mount_point, want = ctx.settings.nfs.mount_point, _expected_source(ctx)
    out = ctx.host(node).run(
        f"findmnt -n -o FSTYPE,SOURCE,OPTIONS --mountpoint {shlex.quote(mount_point)}"
    )
    mount = parse_findmnt(out.stdout)
    if mount is None:
        return failed(f"nothing is mounted on {mount_point}")
    if mount.fstype not in NFS_TYPES:
        return failed(f"{mount_point} is {mount.fstype} from {mount.source}, not nfs")
    if mount.source.rstrip("/") != want:
        return failed(f"{mount_point} mounts {mount.source}, not {want}")
    return passed(f"{mount.fstype} {mount.source} on {mount_point}")


@node_check(
    "storage.mounted_at_boot",
    remedy="re-run provision/nfs-mount.sh: it adds the share to /etc/fstab",
)
def mounted_at_boot(ctx: Context, node: Any) -> CheckResult:
    return _or_skip(ctx, node, "nfs", _mounted_at_boot(ctx, node))


def _mounted_at_boot(ctx: Context, node: Any) -> CheckResult:
    mount_point, want = ctx.settings.nfs.mount_point, _expected_source(ctx)
    out = ctx.host(node).run("cat /etc/fstab")
    if not out.ok:
        return failed(f"cannot read /etc/fstab: {out.stderr.strip()}")
    entries = parse_fstab(out.stdout, mount_point)
    if not entries:
        return failed(f"/etc/fstab has no entry for {mount_point}")
    source, _, fstype, *rest = entries[-1]
    options = rest[0].split(",") if rest else []
    if fstype not in NFS_TYPES or source.rstrip("/") != want:
        return failed(f"/etc/fstab mounts {fstype} {source} on {mount_point}")
    if "noauto" in options:
        return failed(f"/etc/fstab has {mount_point} with noauto: not mounted at boot")
    return passed(f"/etc/fstab: {source} {fstype} {','.join(options)}")


# --- files written on each node, read back on every other ---


def _on_nodes(nodes: Sequence[Any], func: Callable[[Any], T]) -> dict[str, T]:
    """Call ``func`` on every node in parallel threads; return results by name."""
    if len(nodes) < 2:
        return {node.name: func(node) for node in nodes}
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        return dict(zip([n.name for n in nodes], pool.map(func, nodes), strict=True))


def _run(ctx: Context, node: Any, command: str, timeout: float = 60) -> Result:
    """Run ``command`` on the node; an unreachable node is a failed result."""
    try:
        return ctx.host(node).run(command, timeout=timeout)
    except HarnessError as exc:
        return Result(node.name, command, 255, "", str(exc))


def _probe_data(token: str, writer: str) -> bytes:
    """Return the bytes ``writer`` puts on the share: a header, then random bytes."""
    header = f"minicluster storage check {token} written on {writer}\n".encode()
    return header + os.urandom(PROBE_BYTES - len(header))


def _guarded(command: str) -> str:
    return f"timeout -s KILL {IO_TIMEOUT_S} sh -c {shlex.quote(command)}"


def write_command(path: str, data: bytes) -> str:
    """Return a command writing ``data`` to ``path`` and flushing it to the server."""
    encoded = base64.b64encode(data).decode()
    tmp = f"{path}.tmp"
    # dd's fsync: the bytes are on the server (sync export) before it exits.
    write = (
        f"echo {encoded} | base64 -d | dd of={shlex.quote(tmp)} conv=fsync "
        f"status=none && mv {shlex.quote(tmp)} {shlex.quote(path)}"
    )
    return _guarded(write)


def read_command(paths: Sequence[str]) -> str:
    """Return a command printing ``<sha256> <size> <path>`` or ``MISSING <path>``."""
    parts = [
        _guarded(
            f"set -e; sum=$(sha256sum < {shlex.quote(p)} | cut -d' ' -f1); "
            f"echo $sum $(stat -c %s {shlex.quote(p)}) {shlex.quote(p)}"
        )
        + f" || echo MISSING {shlex.quote(p)}"
        for p in paths
    ]
    return "; ".join(parts)


def parse_reads(text: str) -> dict[str, tuple[str, int] | None]:
    """Return ``path -> (sha256, size)`` of :func:`read_command`'s output."""
    seen: dict[str, tuple[str, int] | None] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "MISSING":
            seen.setdefault(words[1], None)
        elif len(words) == 3 and words[1].isdigit():
            seen[words[2]] = (words[0], int(words[1]))
    return seen


def blame(
    nodes: Sequence[str], ok: Mapping[tuple[str, str], bool]
) -> dict[str, list[str]]:
    """Return, per node, the nodes it failed to exchange files with, if to blame.

    ``ok[(reader, writer)]`` tells whether ``reader`` read ``writer``'s file
    intact. Nodes that exchange files both ways with no other node are isolated
    and to blame; any other node is to blame only for failed exchanges with
    nodes that are not isolated themselves. So one node without the share fails
    alone, and a server that serves nobody fails everyone.
    """

    def pair(a: str, b: str) -> bool:
        return ok.get((a, b), False) and ok.get((b, a), False)

    isolated = {n for n in nodes if not any(pair(n, m) for m in nodes if m != n)}
    faults = {}
    for node in nodes:
        others = [m for m in nodes if m != node]
        if node in isolated:
            faults[node] = [m for m in others if not pair(node, m)]
        else:
            faults[node] = [
                m for m in others if m not in isolated and not pair(node, m)
            ]
    return faults


@cluster_check(
    "storage.shared_files",
    remedy="see the storage.mounted and storage.export rows; on the node, "
    "`ls -la <mount point>` and `dmesg | grep -i nfs`",
    needs=("ssh",),
)
def shared_files(ctx: Context) -> list[CheckResult]:
    nodes = list(ctx.nodes)
    token = uuid.uuid4().hex[:12]
    mount_point = ctx.settings.nfs.mount_point.rstrip("/")
    paths = {n.name: f"{mount_point}/{PROBE_PREFIX}{token}-{n.name}" for n in nodes}
    data = {n.name: _probe_data(token, n.name) for n in nodes}
    sums = {name: (hashlib.sha256(d).hexdigest(), len(d)) for name, d in data.items()}

    # Every node writes its file, then every node reads every file.
    writes = _on_nodes(
        nodes, lambda n: _run(ctx, n, write_command(paths[n.name], data[n.name]))
    )
    every = [paths[n.name] for n in nodes]
    read_timeout = IO_TIMEOUT_S * len(every) + 30
    reads = _on_nodes(
        nodes,
        lambda n: parse_reads(_run(ctx, n, read_command(every), read_timeout).stdout),
    )
    _on_nodes(nodes, lambda n: _run(ctx, n, _guarded(f"rm -f {paths[n.name]}")))

    names = [n.name for n in nodes]
    ok = {
        (r, w): reads[r].get(paths[w]) == sums[w]
        for r in names
        for w in names
        if r != w
    }
    faults = blame(names, ok)
    rows = [
        _exchange_row(n, names, writes[n], reads[n], paths, sums, faults) for n in names
    ]
    return [
        _or_skip(ctx, node, "nfs", row) for node, row in zip(nodes, rows, strict=True)
    ]


def _exchange_row(
    name: str,
    names: Sequence[str],
    write: Result,
    read: Mapping[str, tuple[str, int] | None],
    paths: Mapping[str, str],
    sums: Mapping[str, tuple[str, int]],
    faults: Mapping[str, list[str]],
) -> CheckResult:
    if not write.ok:
        why = write.stderr.strip().splitlines()[-1:] or [f"exit {write.exited}"]
        return failed(f"could not write {paths[name]}: {why[0]}", node=name)
    if len(names) == 1:
        # A single node can only read its own file back.
        if read.get(paths[name]) == sums[name]:
            return passed(f"wrote and read back {paths[name]}", node=name)
        return failed(f"read back {paths[name]} differently", node=name)
    if faults[name]:
        problems = []
        for other in faults[name]:
            got = read.get(paths[other])
            if got is None:
                problems.append(f"{other}'s file is missing")
            elif got != sums[other]:
                problems.append(f"{other}'s file differs ({got[1]} bytes)")
            else:
                problems.append(f"{other} could not read this node's file")
        return failed("; ".join(problems), node=name)
    others = [m for m in names if m != name]
    return passed(
        f"read {', '.join(others)}'s files byte for byte; they read its file",
        node=name,
    )
