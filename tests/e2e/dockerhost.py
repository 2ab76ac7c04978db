"""The Docker host of the end-to-end run: its daemon and the nodes' isolation.

Nodes may reach each other and this machine, nothing else. Three things on the
host make it so, and :func:`isolation_problems` asserts all of them: Docker's
IP masquerading is off, the DOCKER-USER chain drops forwarded traffic leaving
through the external interfaces, and the nodes' resolver is an address of this
machine where no DNS server answers (Docker's bridge address).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

# Docker's default bridge, pinned so that its address can be the nodes' resolver.
BRIDGE_ADDRESS = "172.17.0.1"
BRIDGE_CIDR = f"{BRIDGE_ADDRESS}/16"
DOCKERD_ARGS = (
    "--ip-masq=false",
    "--iptables=true",
    f"--bip={BRIDGE_CIDR}",
    f"--dns={BRIDGE_ADDRESS}",
)
DAEMON_START_TIMEOUT_S = 60
# Kernel settings kubelet writes at start. They are not namespaced, so a node
# container that may write /proc/sys changes them on this machine too.
KUBELET_SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
)
CAP_SYS_RESOURCE = 24


def _run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    logger.debug("RUN %s", " ".join(args))
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False
    )


def daemon_answers() -> bool:
    """Return whether a Docker daemon answers on its socket."""
    try:
        return (
            _run(["docker", "info", "--format", "{{.ServerVersion}}"]).returncode == 0
        )
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


def can_run_privileged() -> bool:
    """Return whether ``--privileged`` can work here (CAP_SYS_RESOURCE is bounded)."""
    status = Path("/proc/self/status").read_text(encoding="utf-8")
    bounding = next(line for line in status.splitlines() if line.startswith("CapBnd:"))
    return bool((int(bounding.split()[1], 16) >> CAP_SYS_RESOURCE) & 1)


@dataclass
class Daemon:
    """The Docker daemon the run uses; ``process`` is set when the run started it."""

    log: Path
    process: subprocess.Popen[bytes] | None = None
    added_rules: list[list[str]] = field(default_factory=list)

    @property
    def started_here(self) -> bool:
        return self.process is not None


def start_daemon(log: Path) -> Daemon:
    """Return the running daemon, starting an isolated one if none answers."""
    if daemon_answers():
        logger.info("using the Docker daemon that is already running")
        return Daemon(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    logger.info("starting dockerd %s (log %s)", " ".join(DOCKERD_ARGS), log)
    with log.open("ab") as out:
        process = subprocess.Popen(
            ["dockerd", *DOCKERD_ARGS],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + DAEMON_START_TIMEOUT_S
    while not daemon_answers():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            tail = log.read_text(errors="replace").splitlines()[-10:]
            raise RuntimeError(
                f"dockerd did not answer within {DAEMON_START_TIMEOUT_S} s; "
                "last lines of its log:\n" + "\n".join(tail)
            )
        time.sleep(1)
    return Daemon(log, process)


def stop_daemon(daemon: Daemon) -> None:
    """Stop the daemon if this run started it; remove the rules it added."""
    for rule in daemon.added_rules:
        done = _run(["iptables", "-D", *rule])
        if done.returncode != 0:
            logger.warning("could not remove iptables rule %s: %s", rule, done.stderr)
    if daemon.process is None:
        return
    logger.info("stopping the dockerd this run started (pid %d)", daemon.process.pid)
    daemon.process.terminate()
    try:
        daemon.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        daemon.process.kill()
        daemon.process.wait()


def external_interfaces() -> list[str]:
    """Return the interfaces of this machine's default routes."""
    done = _run(["ip", "-json", "route", "show", "default"])
    return sorted({route["dev"] for route in json.loads(done.stdout or "[]")})


def drop_rule(interface: str) -> list[str]:
    """Return the DOCKER-USER rule that keeps nodes' traffic off ``interface``."""
    return ["DOCKER-USER", "-o", interface, "-j", "DROP"]


def isolate(daemon: Daemon) -> None:
    """Add the drop rule for every external interface (once)."""
    for interface in external_interfaces():
        rule = drop_rule(interface)
        if _run(["iptables", "-C", *rule]).returncode == 0:
            logger.info("DOCKER-USER already drops traffic leaving by %s", interface)
            continue
        done = _run(["iptables", "-I", *rule])
        if done.returncode != 0:
            raise RuntimeError(f"iptables -I {' '.join(rule)}: {done.stderr.strip()}")
        daemon.added_rules.append(rule)
        logger.info("DOCKER-USER now drops forwarded traffic leaving by %s", interface)


def masquerade_sources(nat_rules: str) -> list[str]:
    """Return the source networks that ``iptables -t nat -S`` masquerades.

    Docker's hairpin rules for published ports (``-s A/32 -d A/32 ... --dport``)
    translate traffic between a node and itself and are left out::

        -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
        -A POSTROUTING -s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 22 -j MASQUERADE
    """  # noqa: E501
    sources = []
    for line in nat_rules.splitlines():
        words = line.split()
        if "MASQUERADE" not in words or "-s" not in words:
            continue
        source = words[words.index("-s") + 1]
        if "-d" in words and words[words.index("-d") + 1] == source:
            continue
        sources.append(source)
    return sources


def host_addresses() -> set[str]:
    """Return every IPv4 address of this machine's interfaces."""
    done = _run(["ip", "-json", "-4", "address", "show"])
    return {
        info["local"]
        for link in json.loads(done.stdout or "[]")
        for info in link.get("addr_info", [])
    }


def routes_elsewhere(subnet: str) -> list[str]:
    """Return the routes of ``subnet`` through interfaces that are not Docker's.

    A libvirt or VirtualBox network on the same subnet would take the host's
    traffic to the nodes (two routes, the first one wins).
    """
    done = _run(["ip", "-json", "route", "show", "to", "match", subnet])
    return [
        f"{route['dst']} dev {route['dev']}"
        for route in json.loads(done.stdout or "[]")
        if route.get("dst") != "default"
        and not route["dev"].startswith(("br-", "docker"))
    ]


def isolation_problems(node_networks: list[str]) -> list[str]:
    """Return what would let a node reach beyond this machine (empty: nothing)."""
    problems = []
    if _run(["ip", "link", "show", "docker0"]).returncode != 0:
        # A second dockerd started with --bridge=none deletes it.
        problems.append("Docker's default bridge docker0 is gone; restart dockerd")
    filter_rules = _run(["iptables", "-S", "DOCKER-USER"]).stdout
    for interface in external_interfaces():
        rule = "-A " + " ".join(drop_rule(interface))
        if rule not in filter_rules.splitlines():
            problems.append(f"DOCKER-USER has no `{rule}`")
    nets = [ipaddress.ip_network(n, strict=False) for n in node_networks]
    for source in masquerade_sources(_run(["iptables", "-t", "nat", "-S"]).stdout):
        network = ipaddress.ip_network(source, strict=False)
        if any(network.overlaps(n) for n in nets):
            problems.append(
                f"{source} is masqueraded (start dockerd with --ip-masq=false)"
            )
    return problems


def read_sysctls(names: tuple[str, ...] = KUBELET_SYSCTLS) -> dict[str, str]:
    """Return the current value of each kernel setting in ``names``."""
    return {
        name: Path("/proc/sys", *name.split(".")).read_text(encoding="utf-8").strip()
        for name in names
    }


def restore_sysctls(saved: dict[str, str]) -> None:
    """Write back the kernel settings that differ from ``saved``."""
    for name, value in saved.items():
        path = Path("/proc/sys", *name.split("."))
        if path.read_text(encoding="utf-8").strip() != value:
            path.write_text(value + "\n", encoding="utf-8")
            logger.info("restored %s = %s on this machine", name, value)
