"""The storage criteria on three emulated VMs, in order: up, checks, faults, teardown.

Each fault is made on one node, the storage checks must fail on that node's row
(and pass on the nodes the fault does not touch), and the fault is undone until
every check passes again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import subprocess
import time
import uuid
from collections.abc import Sequence

import pytest

from benchmarks import storage as benchmark
from harness import vmimage
from harness.checks import CheckResult, load_all, run_checks, select
from harness.errors import WaitTimeout
from harness.remote import close_all
from harness.wait import until
from tests.storage import driver, libvirt
from tests.storage.conftest import State

pytestmark = [pytest.mark.storage]

logger = logging.getLogger("tests.storage")

RECOVER_TIMEOUT_S = 240  # NFSv4's grace period after a server restart is 90 s
REBOOT_TIMEOUT_S = 600
WRITE_SECONDS = 300  # the writer's limit; the test stops it much sooner
# The checks that run on the server node only.
SERVER_CHECKS = "storage.server_running or storage.export"


def storage_checks(state: State, expr: str = "storage") -> list[CheckResult]:
    """Run the storage checks; log every row; return them."""
    rows = run_checks(state.ctx, select(expr, load_all().values()))
    for row in rows:
        logger.info("%-26s %-14s %-4s %s", row.name, row.node, row.status, row.seen)
    return rows


def write_report(state: State, name: str, rows: Sequence[CheckResult]) -> None:
    path = state.results / f"checks-{name}.json"
    path.write_text(json.dumps([r.to_dict() for r in rows], indent=2) + "\n")


def assert_all_pass(rows: Sequence[CheckResult]) -> None:
    bad = [f"{r.name} on {r.node}: {r.status}: {r.seen}" for r in rows if not r.passed]
    assert not bad, "storage checks not all passing:\n" + "\n".join(bad)


def assert_fault_named(
    rows: Sequence[CheckResult], check: str, node: str, spared: Sequence[str] = ()
) -> None:
    """Assert ``check`` fails on ``node``, and passes on the ``spared`` nodes."""
    row = next((r for r in rows if r.name == check and r.node == node), None)
    assert row is not None, f"no {check} row for {node}"
    assert row.failed, f"{check} on {node} did not fail: {row.status}: {row.seen}"
    wrong = [r for r in rows if r.name == check and r.node in spared and not r.passed]
    assert not wrong, f"{check} also failed where the fault is not: {wrong}"


def wait_all_pass(state: State, what: str, expr: str = "storage") -> float:
    """Wait until every check of ``expr`` passes again; return how long it took."""
    started = time.monotonic()

    def probe() -> tuple[bool, str]:
        rows = storage_checks(state, expr)
        bad = [f"{r.name} on {r.node}: {r.seen}" for r in rows if not r.passed]
        return not bad, "; ".join(bad) or "all pass"

    until(what, probe, timeout_s=RECOVER_TIMEOUT_S, interval_s=5)
    return time.monotonic() - started


def sh(state: State, node: str, command: str, timeout: float = 120) -> str:
    """Run ``command`` as root on ``node``; return its stdout, or fail the test."""
    result = state.ctx.host(node).run(command, timeout=timeout)
    assert result.ok, f"{command!r} on {node} exited {result.exited}: {result.stderr}"
    return str(result.stdout)


def roles(state: State) -> tuple[str, str, str]:
    """Return the server and two clients (the last two nodes other than the server)."""
    server = state.ctx.settings.nfs.server
    clients = [n.name for n in state.ctx.nodes if n.name != server]
    assert len(clients) >= 2, "the storage run needs the server and two more nodes"
    return server, clients[0], clients[-1]


# --- bring-up ---


def test_box(state: State) -> None:
    """Build (or reuse) the box and add it to Vagrant."""
    state.host = driver.prepare_host()
    with state.phases.phase("box"):
        box = vmimage.ensure_box()
    state.box_built = box.built
    state.notes["box"] = {"name": box.name, "inputs": box.inputs, "built": box.built}
    state.run = driver.StorageRun(state.results, os.environ, box.name)


def test_vagrant_validate_libvirt(state: State) -> None:
    """With libvirtd up, `vagrant validate` passes for libvirt, as lint cannot show.

    Both the committed cluster.yaml and this run's settings are validated; without
    an NFS server on the host, cluster.yaml's folders are validated as 9p, which
    vagrant-libvirt checks by asking libvirtd.
    """
    run = state.run
    assert run is not None
    committed = {k: v for k, v in run.env.items() if k != "MINICLUSTER_CONFIG"}
    if not libvirt.host_has_nfs_server():
        committed["MINICLUSTER_LIBVIRT_SYNCED_FOLDER"] = "9p"
    with state.phases.phase("validate"):
        for label, env in (("cluster.yaml", committed), ("the run's", run.env)):
            done = subprocess.run(
                ["vagrant", "validate"],
                cwd=driver.ROOT,
                env=env,
                capture_output=True,
                text=True,
                check=False,
                timeout=300,
            )
            assert done.returncode == 0, f"{label} settings: {done.stderr}"
            assert "Vagrantfile validated successfully." in done.stdout, done.stdout
            logger.info("vagrant validate (libvirt, %s settings): ok", label)


def test_up(state: State) -> None:
    """vagrant up the three VMs with the storage provisioners only."""
    run = state.run
    assert run is not None
    settings = run.settings()
    taken = driver.overlapping_routes([settings.node_subnet, driver.MANAGEMENT_ADDRESS])
    if run.created():
        logger.info("destroying the VMs an earlier run left: %s", run.created())
        run.destroy()
        taken = driver.overlapping_routes(
            [settings.node_subnet, driver.MANAGEMENT_ADDRESS]
        )
    assert not taken, (
        f"this machine already routes {', '.join(taken)}: another cluster (for "
        f"example the docker provider's) holds the subnet; stop it, or set "
        f"{driver.SUBNET_VARIABLE} to a free /24 such as 192.168.57.0/24"
    )
    up = run.up()
    state.phases.record("boot", up.boot_s)
    state.phases.record("provision", up.provision_s)
    states = {m.name: m.state for m in run.vagrant.status()}
    assert all(s == "running" for s in states.values()), states
    state.ctx = run.context()
    assert sorted(state.ctx.hosts) == sorted(n.name for n in settings.nodes)


def test_vms_reach_nothing_outside(state: State) -> None:
    """The VMs' networks forward nowhere; no VM has a default route."""
    # vagrant-libvirt names a domain <checkout directory>_<machine>.
    names = tuple(f"{driver.ROOT.name}_{n.name}" for n in state.ctx.nodes)
    domains = [d for d in libvirt.inventory().domains if d in names]
    networks = {net for d in domains for net in libvirt.domain_networks(d)}
    assert networks, f"no libvirt network found for the domains {domains}"
    for net in sorted(networks):
        xml = libvirt.network_xml(net)
        assert "<forward" not in xml, f"libvirt network {net} forwards:\n{xml}"
    # Asserted from the routes alone: the run sends nothing towards an address
    # outside this machine, not even to prove that it would not arrive.
    for node in state.ctx.nodes:
        routes = sh(state, node.name, "ip -4 route show default")
        assert not routes.strip(), f"{node.name} has a default route: {routes}"


def test_storage_checks_pass(state: State) -> None:
    """Every storage check passes on the freshly provisioned VMs."""
    with state.phases.phase("checks"):
        rows = storage_checks(state)
    write_report(state, "healthy", rows)
    assert_all_pass(rows)
    assert {r.name for r in rows} >= {
        "storage.server_running",
        "storage.export",
        "storage.mounted",
        "storage.mounted_at_boot",
        "storage.shared_files",
    }


def test_cli_verify_passes(state: State) -> None:
    """`minicluster verify -k storage` attaches to the run's VMs and passes."""
    assert state.run is not None
    report = state.results / "verify-storage.json"
    done = state.run.verify("storage", report)
    logger.info("minicluster verify -k storage:\n%s", done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(report.read_text(encoding="utf-8"))
    assert (doc["failed"], doc["skipped"]) == (0, 0), doc
    nodes = {r["node"] for r in doc["results"]}
    assert nodes == {n.name for n in state.ctx.settings.nodes}, doc


# --- faults: each is named on its node, then undone ---


@pytest.mark.destructive
def test_share_unmounted_is_named(state: State) -> None:
    server, client, other = roles(state)
    mount_point = state.ctx.settings.nfs.mount_point
    with state.phases.phase("fault-unmounted"):
        sh(state, client, f"umount {shlex.quote(mount_point)}")
        rows = storage_checks(state)
        write_report(state, "unmounted", rows)
        assert_fault_named(rows, "storage.mounted", client, spared=[server, other])
        assert_fault_named(rows, "storage.shared_files", client, [server, other])
        sh(state, client, f"mount {shlex.quote(mount_point)}")
        wait_all_pass(state, f"the share mounted again on {client}")


@pytest.mark.destructive
def test_export_removed_is_named(state: State) -> None:
    server, _, _ = roles(state)
    nfs, subnet = state.ctx.settings.nfs, state.ctx.settings.node_subnet
    with state.phases.phase("fault-export-removed"):
        sh(state, server, f"exportfs -u {subnet}:{nfs.export_path}")
        rows = storage_checks(state, SERVER_CHECKS)
        write_report(state, "export-removed", rows)
        assert_fault_named(rows, "storage.export", server)
        sh(state, server, "exportfs -ra")
        # The last phase checks everything again, after the reboot.
        wait_all_pass(state, f"the export back on {server}", "storage.export")


@pytest.mark.destructive
def test_server_stopped_is_named(state: State) -> None:
    server, _, _ = roles(state)
    with state.phases.phase("fault-server-stopped"):
        sh(state, server, "systemctl stop nfs-server")
        # Reads of the share block while the server is away (each is cut off
        # after a timeout): the checks on the clients are left out to save time.
        rows = storage_checks(state, SERVER_CHECKS)
        write_report(state, "server-stopped", rows)
        assert_fault_named(rows, "storage.server_running", server)
        sh(state, server, "systemctl start nfs-server")
        # All of them: new files wait out the server's grace period.
        wait_all_pass(state, f"nfs-server back on {server}")


# --- a client reboots while the server restarts under another, writing client ---
# The reboot takes the longest under emulation, so it overlaps the restart: it is
# started first and checked last. Neither changes what the other proves.


def _boot_id(state: State, node: str) -> str:
    return sh(state, node, "cat /proc/sys/kernel/random/boot_id").strip()


@pytest.mark.destructive
def test_client_reboot_starts(state: State) -> None:
    _, client, _ = roles(state)
    state.notes["_boot_id"] = _boot_id(state, client)
    host = state.ctx.host(client)
    # Detached, so that the command returns before the connection drops.
    host.run("nohup sh -c 'sleep 1; systemctl reboot' >/dev/null 2>&1 &")
    host.close_quietly()
    state.notes["_reboot_started"] = time.monotonic()


# Appends numbered records to one file on the share, and acknowledges each in a
# log on local disk only once fsync returned: the record is then on the
# server's disk (the export is sync). The file stays open across the restart,
# so the client reclaims it and writes on through the grace period. It stops
# when told (LOG.stop) or after SECONDS.
WRITER = """
import hashlib, os, sys, time
path, log, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
stop = log + ".stop"
acks = open(log, "w")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
end, i = time.monotonic() + seconds, 0
while time.monotonic() < end and not os.path.exists(stop):
    i += 1
    line = f"record {i} {os.urandom(18).hex()}\\n".encode()
    os.write(fd, line)
    os.fsync(fd)
    acks.write(f"{i} {hashlib.sha256(line).hexdigest()} {time.time()}\\n")
    acks.flush()
    os.fsync(acks.fileno())
os.close(fd)
open(log + ".done", "w").close()
"""


def _records(text: str) -> dict[str, str]:
    """Return ``number -> sha256`` of each record line of the written file."""
    sums = {}
    for line in text.splitlines(keepends=True):
        words = line.split()
        if len(words) == 3 and words[0] == "record":
            sums[words[1]] = hashlib.sha256(line.encode()).hexdigest()
    return sums


@pytest.mark.destructive
def test_server_restart_loses_no_acknowledged_write(state: State) -> None:
    server, _, writer = roles(state)
    nfs = state.ctx.settings.nfs
    token = uuid.uuid4().hex[:8]
    name = f".minicluster-restart-{token}"
    log = f"/var/tmp/minicluster-acked-{token}"
    args = f"{nfs.mount_point}/{name} {log} {WRITE_SECONDS}"
    with state.phases.phase("server-restart-during-writes"):
        start = f"nohup python3 -c {shlex.quote(WRITER)} {args} >{log}.out 2>&1 &"
        sh(state, writer, start)

        def progress() -> tuple[int, bool]:
            out = state.ctx.host(writer).run(f"wc -l < {log}; test -e {log}.done")
            words = out.stdout.split()
            return (int(words[0]) if words else 0), out.ok

        def writing(least: int) -> tuple[bool, str]:
            count, _ = progress()
            return count >= least, f"{count} writes acknowledged"

        def finished() -> tuple[bool, str]:
            count, done = progress()
            return done, f"{count} writes acknowledged"

        # The file is open and written to before the server goes away, and
        # written to again after it is back.
        try:
            until("the first writes", lambda: writing(3), timeout_s=120, interval_s=1)
        except WaitTimeout:
            said = state.ctx.host(writer).run(f"cat {log}.out").stdout
            pytest.fail(f"the writer on {writer} wrote nothing; it said:\n{said}")
        restarted_at = float(sh(state, writer, "date +%s.%N"))
        sh(state, server, "systemctl restart nfs-server")
        count, _ = progress()
        until(
            "writes after the restart",
            lambda: writing(count + 3),
            timeout_s=RECOVER_TIMEOUT_S,
            interval_s=1,
        )
        sh(state, writer, f"touch {log}.stop")
        until("the writer to stop", finished, timeout_s=60, interval_s=1)
        acked = [line.split() for line in sh(state, writer, f"cat {log}").splitlines()]
        # What the server holds on its own disk, and what the client reads back.
        on_server = _records(sh(state, server, f"cat {nfs.export_path}/{name}"))
        read_back = f"timeout 60 cat {nfs.mount_point}/{name}"
        on_client = _records(sh(state, writer, read_back))
    before = [a for a in acked if float(a[2]) < restarted_at]
    after = [a for a in acked if float(a[2]) >= restarted_at]
    state.notes["restart"] = {"acknowledged": len(acked), "after_restart": len(after)}
    lost = [a[0] for a in acked if on_server.get(a[0]) != a[1]]
    misread = [a[0] for a in acked if on_client.get(a[0]) != a[1]]
    sh(state, writer, f"rm -f {nfs.mount_point}/{name} {log} {log}.*")
    span = f"{len(before)} writes acknowledged before the restart, {len(after)} after"
    assert before, span
    assert after, span
    assert not lost, f"acknowledged writes missing or wrong on {server}: {lost}"
    assert not misread, f"acknowledged writes read back wrong on {writer}: {misread}"


@pytest.mark.destructive
def test_rebooted_client_mounts_the_share(state: State) -> None:
    _, client, _ = roles(state)
    before = state.notes["_boot_id"]

    def back() -> tuple[bool, str]:
        now = _boot_id(state, client)
        return now != before, f"boot id {now}"

    until(f"{client} to boot again", back, timeout_s=REBOOT_TIMEOUT_S, interval_s=5)

    def mounted() -> tuple[bool, str]:
        rows = storage_checks(state, "storage.mounted")
        row = next(r for r in rows if r.node == client)
        return row.passed, row.seen

    until(f"the share on {client} after boot", mounted, timeout_s=180)
    started = state.notes["_reboot_started"]
    state.phases.record("reboot-client", time.monotonic() - started)
    rows = storage_checks(state)
    write_report(state, "after-reboot", rows)
    assert_all_pass(rows)


# --- numbers, then nothing left behind ---


def test_throughput(state: State) -> None:
    """Write and read throughput on the share and on local disk, same VM."""
    _, client, _ = roles(state)
    with state.phases.phase("throughput"):
        numbers = benchmark.measure(state.ctx, names=[client])
    record = {
        "box": "cold" if state.box_built else "warm",
        "phases": {row["phase"]: row["seconds"] for row in state.phases.rows},
        "throughput": numbers,
        **{k: v for k, v in state.notes.items() if not k.startswith("_")},
    }
    path = state.results / "benchmark.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    logger.info("benchmark: %s", json.dumps(record))


@pytest.mark.always
def test_teardown_leaves_nothing(state: State, request: pytest.FixtureRequest) -> None:
    """vagrant destroy -f, then libvirt holds nothing the run made."""
    if request.config.getoption("--keep-vms"):
        pytest.skip("--keep-vms: the VMs stay up")
    with state.phases.phase("teardown"):
        if state.ctx is not None:
            close_all(state.ctx.hosts)
        problems = driver.tear_down(state.run, state.host)
        state.torn_down = True
    assert not problems, "teardown: " + "; ".join(problems)
    if state.run is not None:
        assert not state.run.created(), f"machines left: {state.run.created()}"
